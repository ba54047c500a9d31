/* SPDX-License-Identifier: GPL-2.0 */
/* C shims for static inlines and macros that Rust cannot call directly. */
#ifndef GVT_RS_HELPERS_H
#define GVT_RS_HELPERS_H
#include <linux/vfio.h>
#include <linux/mdev.h>

struct device *gvt_rs_mdev_dev(struct mdev_device *mdev);
struct mdev_device *gvt_rs_to_mdev_device(struct device *dev);
void gvt_rs_set_drvdata(struct device *dev, void *data);
void *gvt_rs_get_drvdata(struct device *dev);
struct vfio_device *gvt_rs_vfio_alloc_device(size_t size, struct device *dev,
					     const struct vfio_device_ops *ops);
void gvt_rs_vfio_put_device(struct vfio_device *vdev);
#endif

#include <linux/mm.h>
#include <linux/eventfd.h>

/* vm_area_struct / vm_fault accessors (flag helpers and anonymous members). */
bool gvt_rs_vma_is_shared(struct vm_area_struct *vma);
unsigned long gvt_rs_vma_pgoff(struct vm_area_struct *vma);
unsigned long gvt_rs_vma_len(struct vm_area_struct *vma);
/* As gvt_rs_vma_setup_pfnmap for a read-only region: -EINVAL for a writable
 * mapping, and the mapping can never become writable (no VM_MAYWRITE). */
int gvt_rs_vma_setup_ro(struct vm_area_struct *vma, const struct vm_operations_struct *ops,
			void *priv);
/* A mapping of page frames that are not the mapped file's own (VM_PFNMAP):
 * guest RAM (the VMM's anonymous or shmem pages), never handed to the
 * shared-file fault path (dirty accounting through the page's mapping) and
 * with no rmap or mapcount, so their owner may drop them from its page cache
 * while we map them.  The PTEs hold no page reference: the caller keeps the
 * frames alive while mapped (a dma-buf's page references), or zaps the
 * mapping before they can go (the aperture and display region: before any
 * unpin, under the vGPU's lock that faults take). */
void gvt_rs_vma_setup_pfnmap(struct vm_area_struct *vma, const struct vm_operations_struct *ops,
			     void *priv);
vm_fault_t gvt_rs_vmf_insert_page_pfn(struct vm_fault *vmf, struct page *page);
/* Map frame @pfn at the fault address of a VM_PFNMAP mapping (no page
 * reference: the caller zaps the mapping before the frame can go away). */
vm_fault_t gvt_rs_vmf_insert_pfn(struct vm_fault *vmf, u64 pfn);
void *gvt_rs_vmf_private(struct vm_fault *vmf);
unsigned long gvt_rs_vmf_pgoff(struct vm_fault *vmf);
/* A fault handler that must not sleep on a driver lock with the fault's mm
 * lock held (the mmap_lock, or the per-VMA lock) drops that lock, waits, and
 * returns VM_FAULT_RETRY, as TTM does (ttm_bo_vm_reserve).  May this fault
 * be retried (FAULT_FLAG_ALLOW_RETRY: its first try or a later one; faults
 * may be retried many times, see enum fault_flag)?  And must a retry keep
 * the lock and not wait (FAULT_FLAG_RETRY_NOWAIT)? */
bool gvt_rs_vmf_may_retry(struct vm_fault *vmf);
bool gvt_rs_vmf_retry_nowait(struct vm_fault *vmf);
/* Take a reference on the mapping's file (it keeps the device open, so the
 * driver's per-device data stays), then release the fault's mm lock
 * (release_fault_lock).  vmf->vma must not be used afterwards: the mapping
 * may go away.  Give the file back with gvt_rs_fput. */
struct file *gvt_rs_vmf_release_lock(struct vm_fault *vmf);
void gvt_rs_fput(struct file *file);
void gvt_rs_eventfd_signal(struct eventfd_ctx *ctx);
struct module *gvt_rs_this_module(void);
void gvt_rs_zap_range(struct vfio_device *vdev, u64 start, u64 len);

/* Per-vGPU sysfs group "gvt" (/sys/bus/mdev/devices/UUID/gvt/...): the table is
 * built with the DEVICE_ATTR macros in C; show/store are implemented in Rust. */
enum gvt_rs_attr {
	GVT_RS_ATTR_VGPU_ID,
	GVT_RS_ATTR_APERTURE_BASE,
	GVT_RS_ATTR_APERTURE_SIZE,
	GVT_RS_ATTR_HIGH_GM_BASE,
	GVT_RS_ATTR_HIGH_GM_SIZE,
	GVT_RS_ATTR_FENCE_BASE,
	GVT_RS_ATTR_FENCE_COUNT,
	GVT_RS_ATTR_WEIGHT,
	GVT_RS_ATTR_STATE,
	GVT_RS_ATTR_STATS,
	GVT_RS_ATTR_BALLOONED,
	GVT_RS_ATTR_DISPLAY,
	GVT_RS_ATTR_DMABUF,
	GVT_RS_ATTR_MIGRATION,
	GVT_RS_ATTR_NR,
};
extern const struct attribute_group *gvt_rs_vgpu_groups[];
ssize_t gvt_rs_attr_show(struct device *dev, unsigned int attr, char *buf);
ssize_t gvt_rs_attr_store(struct device *dev, unsigned int attr, const char *buf,
			  size_t count);

/* Host pages by page frame number (the physical GGTT's view of memory). */
int gvt_rs_pfn_copy(u64 pfn, size_t offset, void *buf, size_t len, bool write);
/* A zeroed page for the mediator (shadow tables, scratch); 0 on failure. */
u64 gvt_rs_alloc_pfn(void);
void gvt_rs_free_pfn(u64 pfn);
u64 gvt_rs_page_pfn(struct page *page);
/* A reference on the page of frame @pfn (NULL if it has no struct page). */
struct page *gvt_rs_pfn_get_page(u64 pfn);
void gvt_rs_put_page(struct page *page);
/* Pin one guest page (vfio_pin_pages); returns its pfn or a negative errno. */
long long gvt_rs_pin_gfn(struct vfio_device *vdev, u64 gfn);
void gvt_rs_unpin_gfn(struct vfio_device *vdev, u64 gfn);
/* A work item of the module (see gvt_rs_helpers.c): runs fn(owner) on the
 * system workqueue. */
struct gvt_rs_work;
struct gvt_rs_work *gvt_rs_work_new(void (*fn)(const void *owner), const void *owner, bool account);
void gvt_rs_work_queue(struct gvt_rs_work *w);
void gvt_rs_work_kick(struct gvt_rs_work *w, unsigned long delay_jiffies);
void gvt_rs_work_arm(struct gvt_rs_work *w, u64 deadline_ns, u64 now_ns);
void gvt_rs_work_disarm(struct gvt_rs_work *w);
void gvt_rs_work_cancel_sync(struct gvt_rs_work *w);
void gvt_rs_work_free(struct gvt_rs_work *w);
/* Zero page frame `pfn` (a page this module allocated). */
void gvt_rs_clear_pfn(u64 pfn);
/* Give the CPU to others if needed (between bounded engine steps). */
void gvt_rs_cond_resched(void);

/* VFIO migration v2 data files (see gvt_rs_helpers.c). */
struct gvt_rs_migf;
struct gvt_rs_migf *gvt_rs_migf_new(bool saving, size_t cap);
struct file *gvt_rs_migf_file(struct gvt_rs_migf *m);
int gvt_rs_migf_fill(struct gvt_rs_migf *m, const u8 *data, size_t len);
void gvt_rs_migf_set_precopy(struct gvt_rs_migf *m, bool on);
void gvt_rs_migf_set_refill(struct gvt_rs_migf *m,
			    ssize_t (*refill)(const void *owner, u8 *dst, size_t room),
			    const void *owner);
int gvt_rs_migf_expect(struct gvt_rs_migf *m, size_t at, const u8 *bytes, size_t len);
bool gvt_rs_migf_refused(struct gvt_rs_migf *m);
size_t gvt_rs_migf_take(struct gvt_rs_migf *m, u8 **data);
void gvt_rs_migf_free_data(u8 *data);
void gvt_rs_migf_put(struct gvt_rs_migf *m);

/* One register-sized (1, 2, 4 or 8 bytes) user access: 0 or -EFAULT
 * (-EINVAL for another size). */
int gvt_rs_put_user(void __user *p, u64 v, unsigned int size);
int gvt_rs_get_user(const void __user *p, u64 *v, unsigned int size);
