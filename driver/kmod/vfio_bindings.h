/* SPDX-License-Identifier: GPL-2.0 */
/* Input of the module-local bindgen step (see Kbuild). */
#include <linux/vfio.h>
#include <linux/mdev.h>
#include "gvt_rs_helpers.h"
