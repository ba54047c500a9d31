/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C side of gvt_drm.ko: the device structure (a drm_device with its
 * primary and cursor planes, CRTC, encoder and connector embedded, as
 * every KMS driver has),
 * and shims for what Rust cannot call: macros (DEFINE_DRM_GEM_FOPS,
 * DRM_GEM_SHMEM_DRIVER_OPS, devm_drm_dev_alloc, container_of), static
 * inlines (MMIO accessors, scatterlist and atomic-state accessors).
 * Everything else (probe, PVINFO, ballooning, GGTT, KMS callbacks) is Rust.
 */
#ifndef GVT_DRM_HELPERS_H
#define GVT_DRM_HELPERS_H
#include <linux/pci.h>
#include <linux/scatterlist.h>
#include <linux/interrupt.h>
#include <drm/drm_device.h>
#include <drm/drm_drv.h>
#include <drm/drm_plane.h>
#include <drm/drm_crtc.h>
#include <drm/drm_encoder.h>
#include <drm/drm_connector.h>
#include <drm/drm_atomic.h>
#include <drm/drm_gem.h>
#include <drm/drm_gem_shmem_helper.h>
#include <linux/fb.h>
#include <linux/wait.h>

struct gvt_drm_dev {
	struct drm_device drm;		/* first: a drm_device * is a gvt_drm_dev * */
	struct drm_plane plane;		/* primary */
	struct drm_plane cursor;
	struct drm_crtc crtc;
	struct drm_encoder encoder;
	struct drm_connector connector;
	struct pci_dev *pdev;
	void __iomem *mmio;		/* BAR0: registers, PVINFO, EDID page, GGTT view */
	void *rs;			/* the Rust state (gvt_drm_main.rs: Gpu) */
	int irq;			/* the MSI vector's irq, 0 if none */
	/* The blitter (gvt_drm_main.rs, Blitter): woken by the BCS user and
	 * error interrupts; fbcon's fills and copies go to it when fb_accel. */
	wait_queue_head_t bcs_wq;
	bool fb_accel;
	struct fb_ops fbops;		/* the shmem fbdev ops, fill/copy ours */
	const struct fb_ops *fbops_orig;
	struct dentry *debugfs;
};

/* devm_drm_dev_alloc() with our driver; an ERR_PTR on failure. */
struct gvt_drm_dev *gvt_drm_dev_alloc(struct pci_dev *pdev);
/* BAR0 mapped for the device's lifetime (pcim); an ERR_PTR on failure. */
void __iomem *gvt_drm_map_bar0(struct pci_dev *pdev);
int gvt_drm_set_dma_mask(struct pci_dev *pdev, unsigned int bits);
u32 gvt_drm_rd32(void __iomem *mmio, u32 off);
void gvt_drm_wr32(void __iomem *mmio, u32 off, u32 val);
u64 gvt_drm_rd64(void __iomem *mmio, u32 off);
void gvt_drm_wr64(void __iomem *mmio, u32 off, u64 val);

struct scatterlist *gvt_drm_sg_next(struct scatterlist *sg);
u64 gvt_drm_sg_dma_address(struct scatterlist *sg);
unsigned int gvt_drm_sg_dma_len(struct scatterlist *sg);

struct drm_gem_shmem_object *gvt_drm_to_shmem(struct drm_gem_object *obj);
struct drm_plane_state *gvt_drm_new_plane_state(struct drm_atomic_commit *state,
						struct drm_plane *plane);
struct drm_plane_state *gvt_drm_old_plane_state(struct drm_atomic_commit *state,
						struct drm_plane *plane);
struct drm_crtc_state *gvt_drm_new_crtc_state(struct drm_atomic_commit *state,
					      struct drm_crtc *crtc);
void gvt_drm_client_setup(struct drm_device *drm);
/* One MSI vector and its handler (data = @g); gvt_drm_irq_fini undoes it. */
int gvt_drm_irq_init(struct gvt_drm_dev *g, irq_handler_t handler);
void gvt_drm_irq_fini(struct gvt_drm_dev *g);
/* Hand a commit's CRTC event to the next vblank (or send it now if vblank
 * interrupts are off), under the device's event lock. */
void gvt_drm_crtc_send_event(struct drm_crtc *crtc, struct drm_pending_vblank_event *e);

/* Coherent DMA memory for the device's lifetime (dmam); NULL on failure. */
void *gvt_drm_dma_alloc(struct gvt_drm_dev *g, size_t size, u64 *dma);
/* The blitter's wait queue: wake it (IRQ handler); wait until
 * done(arg) or @timeout_ms passed, 0 = timed out, else the time left. */
void gvt_drm_bcs_wake(struct gvt_drm_dev *g);
long gvt_drm_bcs_wait(struct gvt_drm_dev *g, bool (*done)(void *), void *arg,
		      unsigned int timeout_ms);
/* The fbdev emulation's framebuffer: its GEM object, CPU address, pitch
 * and size; false if there is none. */
bool gvt_drm_fbdev_target(struct drm_device *drm, struct drm_gem_object **obj,
			  void **vaddr, u32 *pitch, u32 *width, u32 *height);
/* debugfs: <debugfs>/gvt_drm-<pci device>/{blit_stats,blit_bench,blit_fill} */
void gvt_drm_debugfs_init(struct gvt_drm_dev *g);
void gvt_drm_debugfs_fini(struct gvt_drm_dev *g);
u64 gvt_drm_ktime_ns(void);
void gvt_drm_msleep(unsigned int ms);
void gvt_drm_udelay(unsigned int us);
bool gvt_drm_may_sleep(void);

/* Implemented in Rust (gvt_drm_main.rs), referenced by the driver table. */
int gvt_drm_rs_dumb_create(struct drm_file *file, struct drm_device *dev,
			   struct drm_mode_create_dumb *args);
/* fbcon's fill / copy on the blitter: 0 if done, else draw on the CPU. */
int gvt_drm_rs_fillrect(struct drm_device *drm, struct drm_gem_object *obj, u32 pitch,
			u32 x, u32 y, u32 w, u32 h, u32 color);
int gvt_drm_rs_copyarea(struct drm_device *drm, struct drm_gem_object *obj, u32 pitch,
			u32 dx, u32 dy, u32 sx, u32 sy, u32 w, u32 h);
/* debugfs: the blitter's counters as text (length written, at most @len);
 * a command written to blit_bench / blit_fill (results in the kernel log). */
size_t gvt_drm_rs_stats(struct drm_device *drm, char *buf, size_t len);
int gvt_drm_rs_bench(struct drm_device *drm, u32 arg);
int gvt_drm_rs_fill_test(struct drm_device *drm, u32 arg);
#endif
