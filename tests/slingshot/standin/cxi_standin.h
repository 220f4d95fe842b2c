/*
 * STAND-IN libcxi: the service types drc's ctypes binding (drc/node/cxi.py) declares.
 *
 * NOT libcxi. Field order follows libcxi's <libcxi.h> / the driver's cxi-abi.h as drc's notes
 * record them; the layout has not been checked against a real header on Slingshot hardware.
 */
#ifndef CXI_STANDIN_H
#define CXI_STANDIN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define CXI_SVC_MAX_VNIS 4
#define CXI_SVC_MAX_MEMBERS 2
#define CXI_TC_MAX 5 /* DEDICATED_ACCESS, LOW_LATENCY, BULK_DATA, BEST_EFFORT, ETH */
#define CXI_RSRC_TYPE_MAX 8
#define CXI_DEFAULT_SVC_ID 1

enum cxi_svc_member_type {
	CXI_SVC_MEMBER_IGNORE,
	CXI_SVC_MEMBER_UID,
	CXI_SVC_MEMBER_GID,
	CXI_SVC_MEMBER_NET_NS,
};

struct cxi_svc_member {
	union {
		uid_t uid;
		gid_t gid;
		unsigned int net_ns;
	} svc_member;
	enum cxi_svc_member_type type;
};

struct cxi_limits {
	uint16_t max;
	uint16_t res;
};

struct cxi_rsrc_limits {
	struct cxi_limits type[CXI_RSRC_TYPE_MAX]; /* ptes txqs tgqs eqs cts les tles acs */
};

struct cxi_svc_desc {
	uint8_t restricted_members:1;
	uint8_t restricted_vnis:1;
	uint8_t restricted_tcs:1;
	uint8_t resource_limits:1;
	uint8_t enable:1;
	uint8_t is_system_svc:1;
	uint8_t num_vld_vnis;
	uint16_t vnis[CXI_SVC_MAX_VNIS];
	bool tcs[CXI_TC_MAX];
	struct cxi_svc_member members[CXI_SVC_MAX_MEMBERS];
	struct cxi_rsrc_limits limits;
	unsigned int svc_id;
};

struct cxi_svc_fail_info {
	uint16_t rsrc_avail[CXI_RSRC_TYPE_MAX];
	bool no_le_pools;
	bool no_tle_pools;
	bool no_cntr_pools;
};

struct cxil_svc_list {
	unsigned int count;
	struct cxi_svc_desc descs[];
};

struct cxil_dev;
struct cxil_lni;

#endif
