// SPDX-License-Identifier: GPL-2.0
/* The VM rig's self-check (tools/vm-run.sh scans the guest log; the rig must
 * fail a run in which either of these happens):
 *   insmod gvt_selftest_warn.ko            WARNs on load;
 *   insmod gvt_selftest_warn.ko hang_ms=N  sleeps N ms uninterruptibly in
 *     its init instead, so that the kernel's hung-task detector (with
 *     kernel.hung_task_timeout_secs lowered) reports "INFO: task insmod:...
 *     blocked for more than ... seconds", a real kernel message of the kind
 *     the rig must catch however late in a run it comes. */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/bug.h>
#include <linux/delay.h>

static unsigned int hang_ms;
module_param(hang_ms, uint, 0444);
MODULE_PARM_DESC(hang_ms, "sleep this long (uninterruptibly) in init instead of WARNing");

static int __init gvt_selftest_warn_init(void)
{
	if (hang_ms) {
		msleep(hang_ms);
		return 0;
	}
	WARN(1, "gvt-rs rig self-check: deliberate warning\n");
	return 0;
}

static void __exit gvt_selftest_warn_exit(void)
{
}

module_init(gvt_selftest_warn_init);
module_exit(gvt_selftest_warn_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("gvt-rs VM rig self-check: WARNs on load, or blocks in init (hang_ms)");
