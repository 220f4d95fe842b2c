/*
 * STAND-IN libcxi for drc's tests. NOT libcxi, NOT a CXI driver.
 *
 * Exports the cxil_* calls drc uses under libcxi's version nodes (libcxi.map) and keeps the
 * "device" state in text files, so DRCC, test code and applications in other processes see
 * one NIC. It enforces the documented rules drc depends on (see README.md):
 *   - alloc/destroy need CAP_SYS_ADMIN (-EPERM);
 *   - descriptors are validated (-EINVAL: > 4 VNIs, > 2 members, VNI 0, bad member type);
 *   - service 1 (the default service) cannot be destroyed (-EINVAL);
 *   - a service with a live LNI cannot be destroyed (-EBUSY);
 *   - cxil_alloc_lni checks membership on the effective uid and effective primary gid only,
 *     root included (-EPERM), and refuses disabled services (-EKEYREVOKED);
 *   - two services with one exact VNI on one NIC are accepted (drivers from June 2026 on);
 *     with CXI_STANDIN_OLD_DRIVER=1 they get -EEXIST as on older drivers.
 * State: $CXI_STANDIN_DIR/cxiN (a device exists when its file does), faults in
 * $CXI_STANDIN_DIR/faults: lines "OP COUNT ERRNO" (OP: alloc, destroy, alloc_lni) make the
 * next COUNT calls of OP fail with -ERRNO.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cxi_standin.h"

#define MAX_SVCS 256

struct cxil_dev {
	unsigned int dev_id;
};

struct cxil_lni {
	unsigned int dev_id;
	unsigned int svc_id;
};

struct svc {
	struct cxi_svc_desc desc;
	unsigned int lnis;
};

struct device {
	unsigned int next_id;
	unsigned int count;
	struct svc svcs[MAX_SVCS];
};

static const char *state_dir(void)
{
	const char *dir = getenv("CXI_STANDIN_DIR");

	return dir && *dir ? dir : "/run/cxi-standin";
}

static int dev_path(unsigned int dev_id, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/cxi%u", state_dir(), dev_id);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static void default_service(struct device *d)
{
	struct cxi_svc_desc *s = &d->svcs[0].desc;

	memset(&d->svcs[0], 0, sizeof(d->svcs[0]));
	s->svc_id = CXI_DEFAULT_SVC_ID;
	s->enable = 1;
	s->restricted_vnis = 1;
	s->num_vld_vnis = 2;
	s->vnis[0] = 1;
	s->vnis[1] = 10;
	d->count = 1;
	d->next_id = 2;
}

/* Parse the device file; an empty file is a fresh device holding only the default service. */
static int load(FILE *f, struct device *d)
{
	char line[512];

	memset(d, 0, sizeof(*d));
	default_service(d);
	d->count = 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned int id, flags, nv, v[4], tcs, t0, m0, t1, m1, lnis, i;
		struct svc *s;

		if (sscanf(line, "next %u", &id) == 1) {
			d->next_id = id;
			continue;
		}
		if (sscanf(line, "svc %u %u %u %u %u %u %u %u %u %u %u %u %u", &id, &flags, &nv,
			   &v[0], &v[1], &v[2], &v[3], &tcs, &t0, &m0, &t1, &m1, &lnis) != 13)
			continue;
		if (d->count >= MAX_SVCS)
			return -ENOSPC;
		s = &d->svcs[d->count++];
		memset(s, 0, sizeof(*s));
		s->desc.svc_id = id;
		s->desc.restricted_members = flags & 1;
		s->desc.restricted_vnis = (flags >> 1) & 1;
		s->desc.restricted_tcs = (flags >> 2) & 1;
		s->desc.resource_limits = (flags >> 3) & 1;
		s->desc.enable = (flags >> 4) & 1;
		s->desc.num_vld_vnis = (uint8_t)(nv > CXI_SVC_MAX_VNIS ? CXI_SVC_MAX_VNIS : nv);
		for (i = 0; i < CXI_SVC_MAX_VNIS; i++)
			s->desc.vnis[i] = (uint16_t)v[i];
		for (i = 0; i < CXI_TC_MAX; i++)
			s->desc.tcs[i] = (tcs >> i) & 1;
		s->desc.members[0].type = (enum cxi_svc_member_type)t0;
		s->desc.members[0].svc_member.uid = m0;
		s->desc.members[1].type = (enum cxi_svc_member_type)t1;
		s->desc.members[1].svc_member.uid = m1;
		s->lnis = lnis;
	}
	if (d->count == 0)
		default_service(d);
	return 0;
}

static int save(FILE *f, const struct device *d)
{
	unsigned int i, j;

	if (fseek(f, 0, SEEK_SET) || ftruncate(fileno(f), 0))
		return -errno;
	fprintf(f, "next %u\n", d->next_id);
	for (i = 0; i < d->count; i++) {
		const struct svc *s = &d->svcs[i];
		unsigned int flags = s->desc.restricted_members | s->desc.restricted_vnis << 1 |
				     s->desc.restricted_tcs << 2 | s->desc.resource_limits << 3 |
				     s->desc.enable << 4;
		unsigned int tcs = 0;

		for (j = 0; j < CXI_TC_MAX; j++)
			tcs |= (unsigned int)s->desc.tcs[j] << j;
		fprintf(f, "svc %u %u %u %u %u %u %u %u %u %u %u %u %u\n", s->desc.svc_id, flags,
			s->desc.num_vld_vnis, s->desc.vnis[0], s->desc.vnis[1], s->desc.vnis[2],
			s->desc.vnis[3], tcs, (unsigned int)s->desc.members[0].type,
			(unsigned int)s->desc.members[0].svc_member.uid,
			(unsigned int)s->desc.members[1].type,
			(unsigned int)s->desc.members[1].svc_member.uid, s->lnis);
	}
	return fflush(f) ? -errno : 0;
}

/* Open and lock a device's state; NULL and -errno in *rc when the device does not exist. */
static FILE *lock_device(unsigned int dev_id, struct device *d, int *rc)
{
	char path[4096];
	FILE *f;
	int fd;

	*rc = dev_path(dev_id, path, sizeof(path));
	if (*rc)
		return NULL;
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		*rc = errno == ENOENT ? -ENODEV : -errno;
		return NULL;
	}
	if (flock(fd, LOCK_EX) || !(f = fdopen(fd, "r+"))) {
		*rc = -errno;
		close(fd);
		return NULL;
	}
	*rc = load(f, d);
	if (*rc) {
		fclose(f);
		return NULL;
	}
	return f;
}

static int unlock_device(FILE *f, const struct device *d, int rc)
{
	if (d && rc >= 0) {
		int saved = save(f, d);

		if (saved)
			rc = saved;
	}
	fclose(f);
	return rc;
}

/* A pending injected failure of OP: its -errno (consumed), else 0. */
static int injected(const char *op)
{
	char path[4096], line[128], out[4096] = "";
	int rc = 0, fd;
	FILE *f;

	if (snprintf(path, sizeof(path), "%s/faults", state_dir()) >= (int)sizeof(path))
		return 0;
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return 0;
	if (flock(fd, LOCK_EX) || !(f = fdopen(fd, "r+"))) {
		close(fd);
		return 0;
	}
	while (fgets(line, sizeof(line), f)) {
		char name[32];
		unsigned int count, err;
		size_t used = strlen(out);

		if (sscanf(line, "%31s %u %u", name, &count, &err) != 3)
			continue;
		if (!rc && !strcmp(name, op) && count > 0) {
			rc = -(int)err;
			count--;
		}
		snprintf(out + used, sizeof(out) - used, "%s %u %u\n", name, count, err);
	}
	if (!fseek(f, 0, SEEK_SET) && !ftruncate(fileno(f), 0))
		fputs(out, f);
	fclose(f);
	return rc;
}

static int has_sys_admin(void)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[2];

	if (syscall(SYS_capget, &hdr, data))
		return 0;
	return (data[CAP_SYS_ADMIN / 32].effective >> (CAP_SYS_ADMIN % 32)) & 1;
}

static struct svc *find(struct device *d, unsigned int svc_id)
{
	unsigned int i;

	for (i = 0; i < d->count; i++)
		if (d->svcs[i].desc.svc_id == svc_id)
			return &d->svcs[i];
	return NULL;
}

static int validate(const struct cxi_svc_desc *desc)
{
	unsigned int i;

	if (desc->restricted_vnis) {
		if (desc->num_vld_vnis == 0 || desc->num_vld_vnis > CXI_SVC_MAX_VNIS)
			return -EINVAL;
		for (i = 0; i < desc->num_vld_vnis; i++)
			if (desc->vnis[i] == 0)
				return -EINVAL;
	}
	if (desc->restricted_members) {
		int any = 0;

		for (i = 0; i < CXI_SVC_MAX_MEMBERS; i++) {
			if (desc->members[i].type > CXI_SVC_MEMBER_NET_NS)
				return -EINVAL;
			any |= desc->members[i].type != CXI_SVC_MEMBER_IGNORE;
		}
		if (!any)
			return -EINVAL;
	}
	return 0;
}

int cxil_open_device(uint32_t dev_id, struct cxil_dev **dev)
{
	char path[4096];
	int rc;

	if (!dev)
		return -EINVAL;
	rc = dev_path(dev_id, path, sizeof(path));
	if (rc)
		return rc;
	if (access(path, F_OK))
		return -ENODEV;
	*dev = calloc(1, sizeof(**dev));
	if (!*dev)
		return -ENOMEM;
	(*dev)->dev_id = dev_id;
	return 0;
}

void cxil_close_device(struct cxil_dev *dev)
{
	free(dev);
}

int cxil_alloc_svc(struct cxil_dev *dev, const struct cxi_svc_desc *desc,
		   struct cxi_svc_fail_info *fail_info)
{
	struct device d;
	struct svc *s;
	unsigned int i, j, k;
	FILE *f;
	int rc;

	if (!dev || !desc)
		return -EINVAL;
	if (!has_sys_admin())
		return -EPERM;
	rc = validate(desc);
	if (rc)
		return rc;
	rc = injected("alloc");
	if (rc) {
		if (fail_info)
			memset(fail_info, 0, sizeof(*fail_info));
		return rc;
	}
	f = lock_device(dev->dev_id, &d, &rc);
	if (!f)
		return rc;
	if (d.count >= MAX_SVCS) {
		if (fail_info)
			memset(fail_info, 0, sizeof(*fail_info));
		return unlock_device(f, NULL, -ENOSPC);
	}
	if (desc->restricted_vnis && getenv("CXI_STANDIN_OLD_DRIVER"))
		for (i = 0; i < d.count; i++)
			for (j = 0; j < d.svcs[i].desc.num_vld_vnis; j++)
				for (k = 0; k < desc->num_vld_vnis; k++)
					if (d.svcs[i].desc.vnis[j] == desc->vnis[k])
						return unlock_device(f, NULL, -EEXIST);
	s = &d.svcs[d.count++];
	memset(s, 0, sizeof(*s));
	s->desc = *desc;
	s->desc.svc_id = d.next_id++;
	return unlock_device(f, &d, (int)s->desc.svc_id);
}

int cxil_destroy_svc(struct cxil_dev *dev, unsigned int svc_id)
{
	struct device d;
	struct svc *s;
	FILE *f;
	int rc;

	if (!dev)
		return -EINVAL;
	if (!has_sys_admin())
		return -EPERM;
	if (svc_id == CXI_DEFAULT_SVC_ID)
		return -EINVAL;
	rc = injected("destroy");
	if (rc)
		return rc;
	f = lock_device(dev->dev_id, &d, &rc);
	if (!f)
		return rc;
	s = find(&d, svc_id);
	if (!s)
		return unlock_device(f, NULL, -EINVAL);
	if (s->lnis)
		return unlock_device(f, NULL, -EBUSY);
	*s = d.svcs[--d.count];
	return unlock_device(f, &d, 0);
}

int cxil_get_svc(struct cxil_dev *dev, unsigned int svc_id, struct cxi_svc_desc *desc)
{
	struct device d;
	struct svc *s;
	FILE *f;
	int rc;

	if (!dev || !desc)
		return -EINVAL;
	f = lock_device(dev->dev_id, &d, &rc);
	if (!f)
		return rc;
	s = find(&d, svc_id);
	if (s)
		*desc = s->desc;
	return unlock_device(f, NULL, s ? 0 : -EINVAL);
}

int cxil_get_svc_list(struct cxil_dev *dev, struct cxil_svc_list **list)
{
	struct device d;
	unsigned int i;
	FILE *f;
	int rc;

	if (!dev || !list)
		return -EINVAL;
	f = lock_device(dev->dev_id, &d, &rc);
	if (!f)
		return rc;
	*list = calloc(1, sizeof(**list) + d.count * sizeof((*list)->descs[0]));
	if (!*list)
		return unlock_device(f, NULL, -ENOMEM);
	(*list)->count = d.count;
	for (i = 0; i < d.count; i++)
		(*list)->descs[i] = d.svcs[i].desc;
	return unlock_device(f, NULL, 0);
}

void cxil_free_svc_list(struct cxil_svc_list *list)
{
	free(list);
}

static int member_of(const struct cxi_svc_desc *desc)
{
	unsigned int i;

	if (!desc->restricted_members)
		return 1;
	for (i = 0; i < CXI_SVC_MAX_MEMBERS; i++) {
		const struct cxi_svc_member *m = &desc->members[i];

		if (m->type == CXI_SVC_MEMBER_UID && m->svc_member.uid == geteuid())
			return 1;
		if (m->type == CXI_SVC_MEMBER_GID && m->svc_member.gid == getegid())
			return 1; /* the primary gid only: supplementary groups do not count */
	}
	return 0;
}

int cxil_alloc_lni(struct cxil_dev *dev, struct cxil_lni **lni, unsigned int svc_id)
{
	struct device d;
	struct svc *s;
	FILE *f;
	int rc;

	if (!dev || !lni)
		return -EINVAL;
	rc = injected("alloc_lni");
	if (rc)
		return rc;
	f = lock_device(dev->dev_id, &d, &rc);
	if (!f)
		return rc;
	s = find(&d, svc_id);
	if (!s)
		return unlock_device(f, NULL, -EINVAL);
	if (!s->desc.enable)
		return unlock_device(f, NULL, -EKEYREVOKED);
	if (!member_of(&s->desc))
		return unlock_device(f, NULL, -EPERM);
	*lni = calloc(1, sizeof(**lni));
	if (!*lni)
		return unlock_device(f, NULL, -ENOMEM);
	(*lni)->dev_id = dev->dev_id;
	(*lni)->svc_id = svc_id;
	s->lnis++;
	return unlock_device(f, &d, 0);
}

int cxil_destroy_lni(struct cxil_lni *lni)
{
	struct device d;
	struct svc *s;
	FILE *f;
	int rc;

	if (!lni)
		return -EINVAL;
	f = lock_device(lni->dev_id, &d, &rc);
	if (!f)
		return rc;
	s = find(&d, lni->svc_id);
	if (s && s->lnis)
		s->lnis--;
	free(lni);
	return unlock_device(f, &d, 0);
}
