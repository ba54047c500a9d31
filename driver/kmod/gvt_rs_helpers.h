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
