// SPDX-License-Identifier: GPL-2.0
/* Shims of gvt_drm.ko (see gvt_drm_helpers.h). */
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/dma-mapping.h>
#include <linux/kstrtox.h>
#include <linux/seq_file.h>
#include <linux/io.h>
#include <linux/io-64-nonatomic-lo-hi.h>
#include <drm/drm_file.h>
#include <drm/drm_fb_helper.h>
#include <drm/drm_fbdev_shmem.h>
#include <drm/drm_framebuffer.h>
#include <drm/drm_gem_framebuffer_helper.h>
#include <drm/drm_gem_shmem_helper.h>
#include <drm/drm_managed.h>
#include <drm/clients/drm_client_setup.h>
#include <drm/drm_vblank.h>
#include "gvt_drm_helpers.h"

DEFINE_DRM_GEM_FOPS(gvt_drm_fops);

static struct gvt_drm_dev *to_gvt(struct drm_device *drm)
{
	return container_of(drm, struct gvt_drm_dev, drm);
}

/* fbcon's solid fills: 32 bpp, plain copy, on the blitter (Rust), else the
 * shmem helper's CPU drawing. */
static void gvt_drm_fb_fillrect(struct fb_info *info, const struct fb_fillrect *r)
{
	struct drm_fb_helper *h = info->par;
	struct gvt_drm_dev *g = to_gvt(h->dev);
	u32 color = r->color;

	if (info->var.bits_per_pixel == 32 && r->rop == ROP_COPY && h->fb) {
		if (info->fix.visual == FB_VISUAL_TRUECOLOR ||
		    info->fix.visual == FB_VISUAL_DIRECTCOLOR) {
			if (r->color >= 16)
				goto cpu;
			color = ((u32 *)info->pseudo_palette)[r->color];
		}
		if (!gvt_drm_rs_fillrect(h->dev, drm_gem_fb_get_obj(h->fb, 0),
					 info->fix.line_length, r->dx, r->dy,
					 r->width, r->height, color))
			return;
	}
cpu:
	g->fbops_orig->fb_fillrect(info, r);
}

/* fbcon's copies (scrolling: SCROLL_MOVE) on the blitter, else the CPU. */
static void gvt_drm_fb_copyarea(struct fb_info *info, const struct fb_copyarea *a)
{
	struct drm_fb_helper *h = info->par;
	struct gvt_drm_dev *g = to_gvt(h->dev);

	if (info->var.bits_per_pixel == 32 && h->fb &&
	    !gvt_drm_rs_copyarea(h->dev, drm_gem_fb_get_obj(h->fb, 0),
				 info->fix.line_length, a->dx, a->dy, a->sx, a->sy,
				 a->width, a->height))
		return;
	g->fbops_orig->fb_copyarea(info, a);
}

/* The shmem fbdev emulation's probe, then (when the blitter is up) our
 * fill and copy, before the fb_info is registered: fbcon then knows them
 * as accelerated. */
static int gvt_drm_fbdev_probe(struct drm_fb_helper *h,
			       struct drm_fb_helper_surface_size *sizes)
{
	struct gvt_drm_dev *g = to_gvt(h->dev);
	int ret = drm_fbdev_shmem_driver_fbdev_probe(h, sizes);

	if (ret || !g->fb_accel)
		return ret;
	g->fbops_orig = h->info->fbops;
	g->fbops = *h->info->fbops;
	g->fbops.fb_fillrect = gvt_drm_fb_fillrect;
	g->fbops.fb_copyarea = gvt_drm_fb_copyarea;
	h->info->fbops = &g->fbops;
	h->info->flags |= FBINFO_HWACCEL_FILLRECT | FBINFO_HWACCEL_COPYAREA;
	return 0;
}

static const struct drm_driver gvt_drm_driver = {
	.driver_features = DRIVER_GEM | DRIVER_MODESET | DRIVER_ATOMIC,
	.fops = &gvt_drm_fops,
	.name = "gvt_drm",
	.desc = "gvt-sim vGPU (gvt-rs)",
	.major = 0,
	.minor = 1,
	/* DRM_GEM_SHMEM_DRIVER_OPS, with our dumb_create: the plane needs a
	 * 64-byte aligned stride (docs/gvt-sim.md 9.1) */
	.gem_prime_import = drm_gem_shmem_prime_import_no_map,
	.dumb_create = gvt_drm_rs_dumb_create,
	.fbdev_probe = gvt_drm_fbdev_probe,
};

struct gvt_drm_dev *gvt_drm_dev_alloc(struct pci_dev *pdev)
{
	struct gvt_drm_dev *g;

	g = devm_drm_dev_alloc(&pdev->dev, &gvt_drm_driver, struct gvt_drm_dev, drm);
	if (!IS_ERR(g)) {
		g->pdev = pdev;
		init_waitqueue_head(&g->bcs_wq);
	}
	return g;
}

void __iomem *gvt_drm_map_bar0(struct pci_dev *pdev)
{
	return pcim_iomap_region(pdev, 0, "gvt_drm");
}

int gvt_drm_set_dma_mask(struct pci_dev *pdev, unsigned int bits)
{
	return dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(bits));
}

u32 gvt_drm_rd32(void __iomem *mmio, u32 off) { return readl(mmio + off); }
void gvt_drm_wr32(void __iomem *mmio, u32 off, u32 val) { writel(val, mmio + off); }
u64 gvt_drm_rd64(void __iomem *mmio, u32 off) { return readq(mmio + off); }
void gvt_drm_wr64(void __iomem *mmio, u32 off, u64 val) { writeq(val, mmio + off); }

struct scatterlist *gvt_drm_sg_next(struct scatterlist *sg) { return sg_next(sg); }
u64 gvt_drm_sg_dma_address(struct scatterlist *sg) { return sg_dma_address(sg); }
unsigned int gvt_drm_sg_dma_len(struct scatterlist *sg) { return sg_dma_len(sg); }

struct drm_gem_shmem_object *gvt_drm_to_shmem(struct drm_gem_object *obj)
{
	return to_drm_gem_shmem_obj(obj);
}

struct drm_plane_state *gvt_drm_new_plane_state(struct drm_atomic_commit *state,
						struct drm_plane *plane)
{
	return drm_atomic_get_new_plane_state(state, plane);
}

struct drm_plane_state *gvt_drm_old_plane_state(struct drm_atomic_commit *state,
						struct drm_plane *plane)
{
	return drm_atomic_get_old_plane_state(state, plane);
}

struct drm_crtc_state *gvt_drm_new_crtc_state(struct drm_atomic_commit *state,
					      struct drm_crtc *crtc)
{
	return drm_atomic_get_new_crtc_state(state, crtc);
}

void gvt_drm_client_setup(struct drm_device *drm)
{
	drm_client_setup(drm, NULL);
}

int gvt_drm_irq_init(struct gvt_drm_dev *g, irq_handler_t handler)
{
	int ret, irq;

	ret = pci_alloc_irq_vectors(g->pdev, 1, 1, PCI_IRQ_MSI);
	if (ret < 0)
		return ret;
	irq = pci_irq_vector(g->pdev, 0);
	ret = request_irq(irq, handler, 0, "gvt_drm", g);
	if (ret) {
		pci_free_irq_vectors(g->pdev);
		return ret;
	}
	g->irq = irq;
	return 0;
}

void gvt_drm_irq_fini(struct gvt_drm_dev *g)
{
	if (!g->irq)
		return;
	free_irq(g->irq, g);
	pci_free_irq_vectors(g->pdev);
	g->irq = 0;
}

void gvt_drm_crtc_send_event(struct drm_crtc *crtc, struct drm_pending_vblank_event *e)
{
	spin_lock_irq(&crtc->dev->event_lock);
	if (drm_crtc_vblank_get(crtc) == 0)
		drm_crtc_arm_vblank_event(crtc, e);
	else
		drm_crtc_send_vblank_event(crtc, e);
	spin_unlock_irq(&crtc->dev->event_lock);
}

void *gvt_drm_dma_alloc(struct gvt_drm_dev *g, size_t size, u64 *dma)
{
	dma_addr_t a;
	void *p = dmam_alloc_coherent(&g->pdev->dev, size, &a, GFP_KERNEL);

	*dma = a;
	return p;
}

void gvt_drm_bcs_wake(struct gvt_drm_dev *g)
{
	wake_up_all(&g->bcs_wq);
}

long gvt_drm_bcs_wait(struct gvt_drm_dev *g, bool (*done)(void *), void *arg,
		      unsigned int timeout_ms)
{
	return wait_event_timeout(g->bcs_wq, done(arg), msecs_to_jiffies(timeout_ms));
}

bool gvt_drm_fbdev_target(struct drm_device *drm, struct drm_gem_object **obj,
			  void **vaddr, u32 *pitch, u32 *width, u32 *height)
{
	struct drm_fb_helper *h = drm->fb_helper;

	if (!h || !h->fb || !h->info || !h->info->screen_buffer)
		return false;
	*obj = drm_gem_fb_get_obj(h->fb, 0);
	*vaddr = h->info->screen_buffer;
	*pitch = h->fb->pitches[0];
	*width = h->fb->width;
	*height = h->fb->height;
	return *obj != NULL;
}

u64 gvt_drm_ktime_ns(void) { return ktime_get_ns(); }
void gvt_drm_msleep(unsigned int ms) { msleep(ms); }
void gvt_drm_udelay(unsigned int us) { udelay(us); }
bool gvt_drm_may_sleep(void) { return preemptible(); }

static int gvt_drm_stats_show(struct seq_file *m, void *unused)
{
	struct gvt_drm_dev *g = m->private;
	char buf[1024];
	size_t n = gvt_drm_rs_stats(&g->drm, buf, sizeof(buf));

	seq_write(m, buf, n);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(gvt_drm_stats);

/* A write of a number runs the command with it (root only: 0200). */
static ssize_t gvt_drm_cmd_write(struct file *f, const char __user *ubuf, size_t len,
				 loff_t *pos, int (*cmd)(struct drm_device *, u32))
{
	struct gvt_drm_dev *g = file_inode(f)->i_private;
	u32 arg;
	int ret = kstrtou32_from_user(ubuf, len, 0, &arg);

	if (ret)
		return ret;
	ret = cmd(&g->drm, arg);
	return ret ? ret : len;
}

static ssize_t gvt_drm_bench_write(struct file *f, const char __user *ubuf, size_t len,
				   loff_t *pos)
{
	return gvt_drm_cmd_write(f, ubuf, len, pos, gvt_drm_rs_bench);
}

static ssize_t gvt_drm_fill_write(struct file *f, const char __user *ubuf, size_t len,
				  loff_t *pos)
{
	return gvt_drm_cmd_write(f, ubuf, len, pos, gvt_drm_rs_fill_test);
}

static const struct file_operations gvt_drm_bench_fops = {
	.owner = THIS_MODULE,
	.write = gvt_drm_bench_write,
};

static const struct file_operations gvt_drm_fill_fops = {
	.owner = THIS_MODULE,
	.write = gvt_drm_fill_write,
};

void gvt_drm_debugfs_init(struct gvt_drm_dev *g)
{
	char name[64];

	snprintf(name, sizeof(name), "gvt_drm-%s", pci_name(g->pdev));
	g->debugfs = debugfs_create_dir(name, NULL);
	if (IS_ERR_OR_NULL(g->debugfs)) {
		g->debugfs = NULL;
		return;
	}
	debugfs_create_file("blit_stats", 0400, g->debugfs, g, &gvt_drm_stats_fops);
	debugfs_create_file("blit_bench", 0200, g->debugfs, g, &gvt_drm_bench_fops);
	debugfs_create_file("blit_fill", 0200, g->debugfs, g, &gvt_drm_fill_fops);
}

void gvt_drm_debugfs_fini(struct gvt_drm_dev *g)
{
	debugfs_remove_recursive(g->debugfs);
	g->debugfs = NULL;
}
