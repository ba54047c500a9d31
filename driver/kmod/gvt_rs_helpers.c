// SPDX-License-Identifier: GPL-2.0
/* C shims for static inlines and macros that Rust cannot call directly. */
#include <linux/module.h>
#include <linux/highmem.h>
#include <linux/file.h>
#include <linux/iommu.h>
#include <linux/workqueue.h>
#include <linux/timekeeping.h>
#include <linux/slab.h>
#include <linux/delay.h>
#include <linux/mutex.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/anon_inodes.h>
#include <linux/vfio.h>
#include <linux/uaccess.h>
#include "gvt_rs_helpers.h"

struct device *gvt_rs_mdev_dev(struct mdev_device *mdev)
{
	return mdev_dev(mdev);
}

struct mdev_device *gvt_rs_to_mdev_device(struct device *dev)
{
	return to_mdev_device(dev);
}

void gvt_rs_set_drvdata(struct device *dev, void *data)
{
	dev_set_drvdata(dev, data);
}

void *gvt_rs_get_drvdata(struct device *dev)
{
	return dev_get_drvdata(dev);
}

/* The device ops as registered: the Rust table plus the iommufd ops.  An
 * emulated-IOMMU device (an mdev) uses VFIO's emulated helpers, as mtty,
 * mbochs and kvmgt do; with CONFIG_IOMMUFD off they are NULL (and unused),
 * with it on, vfio_register_emulated_iommu_dev() refuses a device without
 * them.  Pins go through vfio_pin_pages() either way, and dma_unmap is
 * called for iommufd accesses too. */
static struct vfio_device_ops gvt_rs_ops;
static DEFINE_MUTEX(gvt_rs_ops_lock);
static bool gvt_rs_ops_ready;

static const struct vfio_device_ops *gvt_rs_device_ops(const struct vfio_device_ops *rust)
{
	mutex_lock(&gvt_rs_ops_lock);
	if (!gvt_rs_ops_ready) {
		gvt_rs_ops = *rust;
		gvt_rs_ops.bind_iommufd = vfio_iommufd_emulated_bind;
		gvt_rs_ops.unbind_iommufd = vfio_iommufd_emulated_unbind;
		gvt_rs_ops.attach_ioas = vfio_iommufd_emulated_attach_ioas;
		gvt_rs_ops.detach_ioas = vfio_iommufd_emulated_detach_ioas;
		gvt_rs_ops_ready = true;
	}
	mutex_unlock(&gvt_rs_ops_lock);
	return &gvt_rs_ops;
}

/* vfio_alloc_device() is a macro around _vfio_alloc_device() that checks that
 * the vfio_device is the first member; the Rust side asserts the same. */
struct vfio_device *gvt_rs_vfio_alloc_device(size_t size, struct device *dev,
					     const struct vfio_device_ops *ops)
{
	return _vfio_alloc_device(size, dev, gvt_rs_device_ops(ops));
}

void gvt_rs_vfio_put_device(struct vfio_device *vdev)
{
	vfio_put_device(vdev);
}

bool gvt_rs_vma_is_shared(struct vm_area_struct *vma)
{
	return vma->vm_flags & VM_SHARED;
}

unsigned long gvt_rs_vma_pgoff(struct vm_area_struct *vma)
{
	return vma->vm_pgoff;
}

unsigned long gvt_rs_vma_len(struct vm_area_struct *vma)
{
	return vma->vm_end - vma->vm_start;
}

int gvt_rs_vma_setup_ro(struct vm_area_struct *vma, const struct vm_operations_struct *ops,
			void *priv)
{
	if (vma->vm_flags & VM_WRITE)
		return -EINVAL;
	vm_flags_clear(vma, VM_MAYWRITE);
	gvt_rs_vma_setup_pfnmap(vma, ops, priv);
	return 0;
}

void gvt_rs_vma_setup_pfnmap(struct vm_area_struct *vma, const struct vm_operations_struct *ops,
			     void *priv)
{
	vm_flags_set(vma, VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP);
	vma->vm_ops = ops;
	vma->vm_private_data = priv;
}

vm_fault_t gvt_rs_vmf_insert_page_pfn(struct vm_fault *vmf, struct page *page)
{
	return vmf_insert_pfn(vmf->vma, vmf->address, page_to_pfn(page));
}

vm_fault_t gvt_rs_vmf_insert_pfn(struct vm_fault *vmf, u64 pfn)
{
	return vmf_insert_pfn(vmf->vma, vmf->address, pfn);
}

void *gvt_rs_vmf_private(struct vm_fault *vmf)
{
	return vmf->vma->vm_private_data;
}

unsigned long gvt_rs_vmf_pgoff(struct vm_fault *vmf)
{
	return vmf->pgoff;
}

bool gvt_rs_vmf_may_retry(struct vm_fault *vmf)
{
	return vmf->flags & FAULT_FLAG_ALLOW_RETRY;
}

bool gvt_rs_vmf_retry_nowait(struct vm_fault *vmf)
{
	return vmf->flags & FAULT_FLAG_RETRY_NOWAIT;
}

struct file *gvt_rs_vmf_release_lock(struct vm_fault *vmf)
{
	struct file *file = get_file(vmf->vma->vm_file);

	release_fault_lock(vmf);
	return file;
}

void gvt_rs_fput(struct file *file)
{
	fput(file);
}

void gvt_rs_eventfd_signal(struct eventfd_ctx *ctx)
{
	eventfd_signal(ctx);
}

struct module *gvt_rs_this_module(void)
{
	return THIS_MODULE;
}

#define GVT_RS_RO(_name, _id)                                                    \
	static ssize_t _name##_show(struct device *dev, struct device_attribute *a, \
				    char *buf)                                   \
	{                                                                        \
		return gvt_rs_attr_show(dev, _id, buf);                          \
	}                                                                        \
	static DEVICE_ATTR_RO(_name)
#define GVT_RS_RW(_name, _id)                                                    \
	GVT_RS_RO_SHOW(_name, _id)                                               \
	static ssize_t _name##_store(struct device *dev, struct device_attribute *a, \
				     const char *buf, size_t count)              \
	{                                                                        \
		return gvt_rs_attr_store(dev, _id, buf, count);                  \
	}                                                                        \
	static DEVICE_ATTR_RW(_name)
#define GVT_RS_RO_SHOW(_name, _id)                                               \
	static ssize_t _name##_show(struct device *dev, struct device_attribute *a, \
				    char *buf)                                   \
	{                                                                        \
		return gvt_rs_attr_show(dev, _id, buf);                          \
	}

GVT_RS_RO(vgpu_id, GVT_RS_ATTR_VGPU_ID);
GVT_RS_RO(aperture_base, GVT_RS_ATTR_APERTURE_BASE);
GVT_RS_RO(aperture_size, GVT_RS_ATTR_APERTURE_SIZE);
GVT_RS_RO(high_gm_base, GVT_RS_ATTR_HIGH_GM_BASE);
GVT_RS_RO(high_gm_size, GVT_RS_ATTR_HIGH_GM_SIZE);
GVT_RS_RO(fence_base, GVT_RS_ATTR_FENCE_BASE);
GVT_RS_RO(fence_count, GVT_RS_ATTR_FENCE_COUNT);
GVT_RS_RW(weight, GVT_RS_ATTR_WEIGHT);
GVT_RS_RO(state, GVT_RS_ATTR_STATE);
GVT_RS_RO(stats, GVT_RS_ATTR_STATS);
GVT_RS_RO(ballooned, GVT_RS_ATTR_BALLOONED);
GVT_RS_RO(display, GVT_RS_ATTR_DISPLAY);
GVT_RS_RW(dmabuf, GVT_RS_ATTR_DMABUF);
GVT_RS_RO(migration, GVT_RS_ATTR_MIGRATION);

static struct attribute *gvt_rs_vgpu_attrs[] = {
	&dev_attr_vgpu_id.attr,
	&dev_attr_aperture_base.attr,
	&dev_attr_aperture_size.attr,
	&dev_attr_high_gm_base.attr,
	&dev_attr_high_gm_size.attr,
	&dev_attr_fence_base.attr,
	&dev_attr_fence_count.attr,
	&dev_attr_weight.attr,
	&dev_attr_state.attr,
	&dev_attr_stats.attr,
	&dev_attr_ballooned.attr,
	&dev_attr_display.attr,
	&dev_attr_dmabuf.attr,
	&dev_attr_migration.attr,
	NULL,
};

static const struct attribute_group gvt_rs_vgpu_group = {
	.name = "gvt",
	.attrs = gvt_rs_vgpu_attrs,
};

const struct attribute_group *gvt_rs_vgpu_groups[] = {
	&gvt_rs_vgpu_group,
	NULL,
};

/* Unmap every CPU mapping of [start, start + len) of the device file (the
 * vfio core points every device file's f_mapping at vdev->inode). */
void gvt_rs_zap_range(struct vfio_device *vdev, u64 start, u64 len)
{
	unmap_mapping_range(vdev->inode->i_mapping, start, len, true);
}

int gvt_rs_pfn_copy(u64 pfn, size_t offset, void *buf, size_t len, bool write)
{
	void *va;

	if (!pfn_valid(pfn) || offset > PAGE_SIZE || len > PAGE_SIZE - offset)
		return -EINVAL;
	va = kmap_local_page(pfn_to_page(pfn));
	if (write)
		memcpy(va + offset, buf, len);
	else
		memcpy(buf, va + offset, len);
	kunmap_local(va);
	return 0;
}

u64 gvt_rs_alloc_pfn(void)
{
	struct page *page = alloc_page(GFP_KERNEL | __GFP_ZERO);

	return page ? page_to_pfn(page) : 0;
}

void gvt_rs_free_pfn(u64 pfn)
{
	if (pfn && pfn_valid(pfn))
		__free_page(pfn_to_page(pfn));
}

u64 gvt_rs_page_pfn(struct page *page)
{
	return page_to_pfn(page);
}

struct page *gvt_rs_pfn_get_page(u64 pfn)
{
	struct page *page;

	if (!pfn_valid(pfn))
		return NULL;
	page = pfn_to_page(pfn);
	if (!try_get_page(page))
		return NULL;
	return page;
}

void gvt_rs_put_page(struct page *page)
{
	put_page(page);
}

long long gvt_rs_pin_gfn(struct vfio_device *vdev, u64 gfn)
{
	struct page *page;
	int ret = vfio_pin_pages(vdev, gfn << PAGE_SHIFT, 1, IOMMU_READ | IOMMU_WRITE, &page);

	if (ret < 0)
		return ret;
	if (ret != 1)
		return -EFAULT;
	return page_to_pfn(page);
}

void gvt_rs_unpin_gfn(struct vfio_device *vdev, u64 gfn)
{
	vfio_unpin_pages(vdev, gfn << PAGE_SHIFT, 1);
}

/* A work item of the module: a delayed work on the system workqueue whose
 * function calls back into Rust as fn(owner).  One type serves the engine
 * worker and the vblank timer (mod_delayed_work: re-armed, not queued
 * twice), and each vGPU's interrupt delivery (queued now).  The armed
 * deadline of gvt_rs_work_arm changes with the timer under the item's
 * spinlock, so racing arms keep the earliest.  free cancels the item,
 * waits for a running instance and frees it. */
struct gvt_rs_work {
	struct delayed_work dwork;
	void (*fn)(const void *owner);
	const void *owner;
	spinlock_t lock;
	u64 armed;
};

static void gvt_rs_work_fn(struct work_struct *work)
{
	struct gvt_rs_work *w = container_of(to_delayed_work(work), struct gvt_rs_work, dwork);

	w->fn(w->owner);
}

struct gvt_rs_work *gvt_rs_work_new(void (*fn)(const void *owner), const void *owner, bool account)
{
	struct gvt_rs_work *w = kzalloc(sizeof(*w), account ? GFP_KERNEL_ACCOUNT : GFP_KERNEL);

	if (!w)
		return NULL;
	INIT_DELAYED_WORK(&w->dwork, gvt_rs_work_fn);
	spin_lock_init(&w->lock);
	w->armed = U64_MAX;
	w->fn = fn;
	w->owner = owner;
	return w;
}

void gvt_rs_work_queue(struct gvt_rs_work *w)
{
	queue_delayed_work(system_dfl_wq, &w->dwork, 0);
}

void gvt_rs_work_kick(struct gvt_rs_work *w, unsigned long delay_jiffies)
{
	mod_delayed_work(system_dfl_wq, &w->dwork, delay_jiffies);
}

/* Run the work at deadline_ns (rounded up to whole jiffies, never early, so
 * a run always finds the deadline it was armed for), unless it is armed for
 * earlier already. */
void gvt_rs_work_arm(struct gvt_rs_work *w, u64 deadline_ns, u64 now_ns)
{
	unsigned long flags;
	u64 delay = deadline_ns > now_ns ? deadline_ns - now_ns : 0;

	spin_lock_irqsave(&w->lock, flags);
	if (deadline_ns < w->armed) {
		w->armed = deadline_ns;
		mod_delayed_work(system_dfl_wq, &w->dwork, nsecs_to_jiffies(delay) + 1);
	}
	spin_unlock_irqrestore(&w->lock, flags);
}

/* The work runs: nothing is armed until it (or a vGPU) arms again. */
void gvt_rs_work_disarm(struct gvt_rs_work *w)
{
	unsigned long flags;

	spin_lock_irqsave(&w->lock, flags);
	w->armed = U64_MAX;
	spin_unlock_irqrestore(&w->lock, flags);
}

void gvt_rs_work_cancel_sync(struct gvt_rs_work *w)
{
	cancel_delayed_work_sync(&w->dwork);
}

void gvt_rs_work_free(struct gvt_rs_work *w)
{
	cancel_delayed_work_sync(&w->dwork);
	kfree(w);
}

void gvt_rs_clear_pfn(u64 pfn)
{
	if (pfn_valid(pfn))
		clear_highpage(pfn_to_page(pfn));
}

void gvt_rs_cond_resched(void)
{
	cond_resched();
}


/* ---- VFIO migration v2 data files (issue 14) ------------------------------
 * One anon-inode file per transfer: O_RDONLY for saving (PRE_COPY /
 * STOP_COPY), O_WRONLY for resuming.  The file owns a buffer of at most
 * `cap` bytes and its own mutex; user copies happen only here, under that
 * mutex and no vGPU lock.  The vGPU fills (saving) or takes (resuming) the
 * buffer through the functions below, and lets go with gvt_rs_migf_put(),
 * after which the file answers ENODEV until the VMM closes it. */
struct gvt_rs_migf {
	struct file *filp;
	struct mutex lock;
	bool disabled;
	bool precopy;
	size_t filled;
	size_t cap;
	u8 *data;
	/* PRE_COPY: where the initial data ends; a round of what changed is
	 * appended by refill(owner, dst, room) (under the mutex, so never after
	 * gvt_rs_migf_put) when the VMM has read everything. */
	size_t initial_end;
	ssize_t (*refill)(const void *owner, u8 *dst, size_t room);
	const void *owner;
	/* Resuming: bytes the stream must hold at expect_at (the type), checked
	 * as they arrive; a mismatch refuses the write (and every later one). */
	u8 expect[64];
	size_t expect_at, expect_len;
	bool refused;
};

static int gvt_rs_migf_release(struct inode *inode, struct file *filp)
{
	struct gvt_rs_migf *m = filp->private_data;

	mutex_destroy(&m->lock);
	kvfree(m->data);
	kfree(m);
	return 0;
}

static ssize_t gvt_rs_migf_read(struct file *filp, char __user *buf, size_t len, loff_t *pos)
{
	struct gvt_rs_migf *m = filp->private_data;
	ssize_t ret;

	if (pos)
		return -ESPIPE;
	pos = &filp->f_pos;
	mutex_lock(&m->lock);
	if (m->disabled) {
		ret = -ENODEV;
		goto out;
	}
	if (*pos < 0 || *pos > m->filled) {
		ret = -EINVAL;
		goto out;
	}
	len = min_t(size_t, m->filled - *pos, len);
	if (len && copy_to_user(buf, m->data + *pos, len)) {
		ret = -EFAULT;
		goto out;
	}
	*pos += len;
	ret = len;
out:
	mutex_unlock(&m->lock);
	return ret;
}

static ssize_t gvt_rs_migf_write(struct file *filp, const char __user *buf, size_t len,
				 loff_t *pos)
{
	struct gvt_rs_migf *m = filp->private_data;
	ssize_t ret;

	if (pos)
		return -ESPIPE;
	pos = &filp->f_pos;
	mutex_lock(&m->lock);
	if (m->disabled) {
		ret = -ENODEV;
		goto out;
	}
	if (m->refused) {
		ret = -EINVAL;
		goto out;
	}
	if (len > m->cap - m->filled) {
		ret = -EFBIG;
		goto out;
	}
	if (copy_from_user(m->data + m->filled, buf, len)) {
		ret = -EFAULT;
		goto out;
	}
	if (m->expect_len) {
		/* The part of [expect_at, expect_at + expect_len) these bytes cover. */
		size_t lo = max(m->filled, m->expect_at);
		size_t hi = min(m->filled + len, m->expect_at + m->expect_len);

		if (lo < hi && memcmp(m->data + lo, m->expect + (lo - m->expect_at), hi - lo)) {
			m->refused = true;
			ret = -EINVAL;
			goto out;
		}
	}
	m->filled += len;
	*pos += len;
	ret = len;
out:
	mutex_unlock(&m->lock);
	return ret;
}

/* VFIO_MIG_GET_PRECOPY_INFO: valid only while the device is in PRE_COPY or
 * PRE_COPY_P2P (the vGPU says so with gvt_rs_migf_set_precopy). */
static long gvt_rs_migf_ioctl(struct file *filp, unsigned int cmd, unsigned long arg)
{
	struct gvt_rs_migf *m = filp->private_data;
	unsigned long minsz = offsetofend(struct vfio_precopy_info, dirty_bytes);
	struct vfio_precopy_info info;
	long ret = 0;

	if (cmd != VFIO_MIG_GET_PRECOPY_INFO)
		return -ENOTTY;
	if (copy_from_user(&info, (void __user *)arg, minsz))
		return -EFAULT;
	if (info.argsz < minsz)
		return -EINVAL;
	mutex_lock(&m->lock);
	if (m->disabled) {
		ret = -ENODEV;
	} else if (!m->precopy) {
		ret = -EINVAL;
	} else {
		size_t pos = min_t(loff_t, filp->f_pos, m->filled);

		/* Everything read: the device writes a round of what changed since
		 * (0 bytes when nothing did: the temporary end of the stream). */
		if (pos == m->filled && pos >= m->initial_end && m->refill) {
			ssize_t n = m->refill(m->owner, m->data + m->filled, m->cap - m->filled);

			if (n > 0 && n <= m->cap - m->filled)
				m->filled += n;
		}
		info.initial_bytes = m->initial_end - min(pos, m->initial_end);
		info.dirty_bytes = m->filled - max(pos, m->initial_end);
	}
	mutex_unlock(&m->lock);
	if (ret)
		return ret;
	return copy_to_user((void __user *)arg, &info, minsz) ? -EFAULT : 0;
}

static const struct file_operations gvt_rs_save_fops = {
	.owner = THIS_MODULE,
	.read = gvt_rs_migf_read,
	.unlocked_ioctl = gvt_rs_migf_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.release = gvt_rs_migf_release,
};

static const struct file_operations gvt_rs_resume_fops = {
	.owner = THIS_MODULE,
	.write = gvt_rs_migf_write,
	.release = gvt_rs_migf_release,
};

struct gvt_rs_migf *gvt_rs_migf_new(bool saving, size_t cap)
{
	struct gvt_rs_migf *m = kzalloc(sizeof(*m), GFP_KERNEL_ACCOUNT);

	if (!m)
		return ERR_PTR(-ENOMEM);
	m->data = kvzalloc(cap, GFP_KERNEL_ACCOUNT);
	if (!m->data) {
		kfree(m);
		return ERR_PTR(-ENOMEM);
	}
	m->cap = cap;
	mutex_init(&m->lock);
	m->filp = anon_inode_getfile("gvt_rs_mig", saving ? &gvt_rs_save_fops : &gvt_rs_resume_fops,
				     m, saving ? O_RDONLY : O_WRONLY);
	if (IS_ERR(m->filp)) {
		struct file *f = m->filp;

		mutex_destroy(&m->lock);
		kvfree(m->data);
		kfree(m);
		return ERR_CAST(f);
	}
	stream_open(m->filp->f_inode, m->filp);
	return m;
}

/* A new reference to the file, for the VFIO core to install as the fd. */
struct file *gvt_rs_migf_file(struct gvt_rs_migf *m)
{
	return get_file(m->filp);
}

/* Saving: append `len` bytes (fails with -EFBIG past the capacity). */
int gvt_rs_migf_fill(struct gvt_rs_migf *m, const u8 *data, size_t len)
{
	int ret = 0;

	mutex_lock(&m->lock);
	if (m->disabled)
		ret = -ENODEV;
	else if (len > m->cap - m->filled)
		ret = -EFBIG;
	else {
		memcpy(m->data + m->filled, data, len);
		m->filled += len;
	}
	mutex_unlock(&m->lock);
	return ret;
}

/* PRE_COPY on (what is filled now is the initial data) or off. */
void gvt_rs_migf_set_precopy(struct gvt_rs_migf *m, bool on)
{
	mutex_lock(&m->lock);
	m->precopy = on;
	if (on)
		m->initial_end = m->filled;
	mutex_unlock(&m->lock);
}

/* PRE_COPY rounds: refill(owner, ...) as described at struct gvt_rs_migf;
 * owner must outlive the vGPU's reference (gvt_rs_migf_put). */
void gvt_rs_migf_set_refill(struct gvt_rs_migf *m,
			    ssize_t (*refill)(const void *owner, u8 *dst, size_t room),
			    const void *owner)
{
	mutex_lock(&m->lock);
	m->refill = refill;
	m->owner = owner;
	mutex_unlock(&m->lock);
}

/* Resuming: the stream must hold `bytes` at offset `at`. */
int gvt_rs_migf_expect(struct gvt_rs_migf *m, size_t at, const u8 *bytes, size_t len)
{
	if (len > sizeof(m->expect))
		return -EINVAL;
	mutex_lock(&m->lock);
	memcpy(m->expect, bytes, len);
	m->expect_at = at;
	m->expect_len = len;
	mutex_unlock(&m->lock);
	return 0;
}

/* Whether a write was refused by the expected bytes. */
bool gvt_rs_migf_refused(struct gvt_rs_migf *m)
{
	bool r;

	mutex_lock(&m->lock);
	r = m->refused;
	mutex_unlock(&m->lock);
	return r;
}

/* Resuming: stop accepting writes and hand the buffer over (the caller
 * frees it with gvt_rs_migf_free_data); returns its length. */
size_t gvt_rs_migf_take(struct gvt_rs_migf *m, u8 **data)
{
	size_t n;

	mutex_lock(&m->lock);
	m->disabled = true;
	*data = m->data;
	n = m->filled;
	m->data = NULL;
	m->filled = 0;
	m->cap = 0;
	mutex_unlock(&m->lock);
	return n;
}

void gvt_rs_migf_free_data(u8 *data)
{
	kvfree(data);
}

/* The vGPU lets go: the file answers ENODEV from now on; the buffer goes
 * when the VMM closes its fd. */
void gvt_rs_migf_put(struct gvt_rs_migf *m)
{
	struct file *f = m->filp;

	mutex_lock(&m->lock);
	m->disabled = true;
	m->refill = NULL;
	m->owner = NULL;
	mutex_unlock(&m->lock);
	fput(f);
}

/*
 * A trapped register's bytes to or from user memory: one store or load of
 * the access's width inside user_*_access_begin/end (access_ok, then the
 * access with its fault fixup, inline), where _copy_to_user/_copy_from_user
 * take the generic copy loop and put_user/get_user an out-of-line call.
 */
#define GVT_PUT(type)                                                   \
	do {                                                            \
		if (!user_write_access_begin(p, sizeof(type)))          \
			return -EFAULT;                                 \
		unsafe_put_user((type)v, (type __user *)p, fault_w);    \
		user_write_access_end();                                \
		return 0;                                               \
	} while (0)

int gvt_rs_put_user(void __user *p, u64 v, unsigned int size)
{
	switch (size) {
	case 1:
		GVT_PUT(u8);
	case 2:
		GVT_PUT(u16);
	case 4:
		GVT_PUT(u32);
	case 8:
		GVT_PUT(u64);
	}
	return -EINVAL;
fault_w:
	user_write_access_end();
	return -EFAULT;
}

#define GVT_GET(type)                                                   \
	do {                                                            \
		type x;                                                 \
		if (!user_read_access_begin(p, sizeof(type)))           \
			return -EFAULT;                                 \
		unsafe_get_user(x, (const type __user *)p, fault_r);    \
		user_read_access_end();                                 \
		*v = x;                                                 \
		return 0;                                               \
	} while (0)

int gvt_rs_get_user(const void __user *p, u64 *v, unsigned int size)
{
	switch (size) {
	case 1:
		GVT_GET(u8);
	case 2:
		GVT_GET(u16);
	case 4:
		GVT_GET(u32);
	case 8:
		GVT_GET(u64);
	}
	return -EINVAL;
fault_r:
	user_read_access_end();
	return -EFAULT;
}
