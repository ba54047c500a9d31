// SPDX-License-Identifier: GPL-2.0
/* Shims of gvt_drm.ko (see gvt_drm_helpers.h). */
#include <linux/dma-mapping.h>
#include <linux/io.h>
#include <linux/io-64-nonatomic-lo-hi.h>
#include <drm/drm_file.h>
#include <drm/drm_fbdev_shmem.h>
#include <drm/drm_gem_shmem_helper.h>
#include <drm/drm_managed.h>
#include <drm/clients/drm_client_setup.h>
#include <drm/drm_vblank.h>
#include "gvt_drm_helpers.h"

DEFINE_DRM_GEM_FOPS(gvt_drm_fops);

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
	DRM_FBDEV_SHMEM_DRIVER_OPS,
};

struct gvt_drm_dev *gvt_drm_dev_alloc(struct pci_dev *pdev)
{
	struct gvt_drm_dev *g;

	g = devm_drm_dev_alloc(&pdev->dev, &gvt_drm_driver, struct gvt_drm_dev, drm);
	if (!IS_ERR(g))
		g->pdev = pdev;
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
