// SPDX-License-Identifier: GPL-2.0
/* The VM rig's self-check: a module that WARNs on load.  The rig must fail a
 * run in which this happens (tools/vm-run.sh scans the guest log). */
#include <linux/module.h>
#include <linux/bug.h>

static int __init gvt_selftest_warn_init(void)
{
	WARN(1, "gvt-rs rig self-check: deliberate warning\n");
	return 0;
}

static void __exit gvt_selftest_warn_exit(void)
{
}

module_init(gvt_selftest_warn_init);
module_exit(gvt_selftest_warn_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("gvt-rs VM rig self-check: WARNs on load");
