// SPDX-License-Identifier: GPL-2.0
/* C shims for static inlines and macros that Rust cannot call directly. */
#include <linux/module.h>
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

/* vfio_alloc_device() is a macro around _vfio_alloc_device() that checks that
 * the vfio_device is the first member; the Rust side asserts the same. */
struct vfio_device *gvt_rs_vfio_alloc_device(size_t size, struct device *dev,
					     const struct vfio_device_ops *ops)
{
	return _vfio_alloc_device(size, dev, ops);
}

void gvt_rs_vfio_put_device(struct vfio_device *vdev)
{
	vfio_put_device(vdev);
}
