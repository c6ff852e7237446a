/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vpn: per-packet AES-128-GCM (OpenSSL libcrypto) over the L4 payload of
 * IPv4 TCP/UDP packets, like an ESP tunnel that keeps the inner headers.
 *
 *   encrypt:  [eth|ip|l4| payload ]  ->  [eth|ip|l4| ciphertext | seq (8) | tag (16)]
 *   decrypt:  the reverse; a packet whose tag does not verify is dropped.
 *
 * The nonce is a 4-byte salt and the 8-byte per-NF sequence number that
 * travels with the packet; the IPv4 total length and UDP length grow (or
 * shrink back) by 24 bytes and the IPv4 header checksum is recomputed.
 * The L4 checksum is left as is: the testbed's frames carry none, and a
 * real tunnel would wrap the packet anyway.  Other frames pass unchanged.
 * Two vpn NFs with the same --vpn-key, one --vpn-mode encrypt and one
 * decrypt, give back the original frames.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "nf.h"
#include "nf_pkt.h"

#define VPN_TRAILER 24   /* sequence number + GCM tag */

enum { OPT_VPN_KEY = NF_TYPE_OPT, OPT_VPN_MODE };

static const struct option vpn_options[] = {
	{"vpn-key", required_argument, NULL, OPT_VPN_KEY},
	{"vpn-mode", required_argument, NULL, OPT_VPN_MODE},
	{NULL, 0, NULL, 0},
};

static struct {
	uint8_t key[16];
	int decrypt;
	EVP_CIPHER_CTX *ctx;
	uint64_t seq;
	uint64_t done, bytes, auth_fail, no_room, passed;
} vpn = {
	/* A fixed default key: the testbed measures cost, not secrecy. */
	.key = {0x6d, 0x73, 0x63, 0x6f, 0x70, 0x65, 0x2d, 0x76,
		0x70, 0x6e, 0x2d, 0x6b, 0x65, 0x79, 0x30, 0x31},
};

static const uint8_t salt[4] = {0x4d, 0x53, 0x43, 0x50};

static int
vpn_parse(struct nf_ctx *ctx, int val, const char *arg)
{
	unsigned i;

	if (val == OPT_VPN_MODE) {
		if (strcmp(arg, "encrypt") == 0 || strcmp(arg, "decrypt") == 0) {
			vpn.decrypt = arg[0] == 'd';
			return 0;
		}
		fprintf(stderr, "%s: --vpn-mode is encrypt or decrypt, got '%s'\n", ctx->prog, arg);
		return -1;
	}
	if (strlen(arg) != 32)
		goto bad;
	for (i = 0; i < 16; i++) {
		unsigned b;
		if (sscanf(arg + 2 * i, "%2x", &b) != 1)
			goto bad;
		vpn.key[i] = (uint8_t)b;
	}
	return 0;
bad:
	fprintf(stderr, "%s: --vpn-key wants 32 hex digits (AES-128), got '%s'\n", ctx->prog, arg);
	return -1;
}

static int
vpn_init(struct nf_ctx *ctx)
{
	vpn.ctx = EVP_CIPHER_CTX_new();
	if (vpn.ctx == NULL ||
	    EVP_CipherInit_ex(vpn.ctx, EVP_aes_128_gcm(), NULL, vpn.key, NULL, !vpn.decrypt) != 1 ||
	    EVP_CIPHER_CTX_ctrl(vpn.ctx, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) != 1) {
		fprintf(stderr, "%s: OpenSSL AES-128-GCM setup failed\n", ctx->prog);
		return -1;
	}
	return 0;
}

/* Payload of an IPv4 TCP/UDP packet held in one segment: start and length. */
static uint8_t *
payload_of(struct rte_mbuf *m, struct rte_ipv4_hdr *ip, unsigned *len)
{
	uint8_t *l4 = nf_l4(m, ip);
	uint8_t *end, *start;
	unsigned l4len;

	if (l4 == NULL || m->nb_segs != 1)
		return NULL;
	l4len = ip->next_proto_id == IPPROTO_TCP ? (unsigned)(((struct rte_tcp_hdr *)l4)->data_off >> 4) * 4
						: sizeof(struct rte_udp_hdr);
	start = l4 + l4len;
	end = (uint8_t *)ip + rte_be_to_cpu_16(ip->total_length);
	if (start > end || end > rte_pktmbuf_mtod(m, uint8_t *) + rte_pktmbuf_data_len(m))
		return NULL;
	*len = (unsigned)(end - start);
	return start;
}

static void
set_lengths(struct rte_ipv4_hdr *ip, int delta)
{
	ip->total_length = rte_cpu_to_be_16((uint16_t)(rte_be_to_cpu_16(ip->total_length) + delta));
	if (ip->next_proto_id == IPPROTO_UDP) {
		struct rte_udp_hdr *u = (struct rte_udp_hdr *)((uint8_t *)ip + nf_ipv4_hlen(ip));
		u->dgram_len = rte_cpu_to_be_16((uint16_t)(rte_be_to_cpu_16(u->dgram_len) + delta));
	}
	ip->hdr_checksum = 0;
	ip->hdr_checksum = rte_ipv4_cksum(ip);
}

static int
seal(struct rte_mbuf *m, struct rte_ipv4_hdr *ip, uint8_t *p, unsigned len)
{
	uint8_t iv[12], *trailer;
	int out;

	/* Frames carry Ethernet padding only below 60 bytes; the payload
	 * ends where the IP packet does, so trim anything past it first. */
	if (p + len != rte_pktmbuf_mtod(m, uint8_t *) + rte_pktmbuf_data_len(m))
		rte_pktmbuf_trim(m, (uint16_t)(rte_pktmbuf_mtod(m, uint8_t *) +
					       rte_pktmbuf_data_len(m) - (p + len)));
	trailer = (uint8_t *)rte_pktmbuf_append(m, VPN_TRAILER);
	if (trailer == NULL) {
		vpn.no_room++;
		return -1;
	}
	vpn.seq++;
	memcpy(iv, salt, 4);
	memcpy(iv + 4, &vpn.seq, 8);
	if (EVP_EncryptInit_ex(vpn.ctx, NULL, NULL, NULL, iv) != 1 ||
	    (len > 0 && EVP_EncryptUpdate(vpn.ctx, p, &out, p, (int)len) != 1) ||
	    EVP_EncryptFinal_ex(vpn.ctx, p + len, &out) != 1 ||
	    EVP_CIPHER_CTX_ctrl(vpn.ctx, EVP_CTRL_GCM_GET_TAG, 16, trailer + 8) != 1)
		return -1;
	memcpy(trailer, &vpn.seq, 8);
	set_lengths(ip, VPN_TRAILER);
	return 0;
}

static int
open_sealed(struct rte_mbuf *m, struct rte_ipv4_hdr *ip, uint8_t *p, unsigned len)
{
	uint8_t iv[12], tag[16];
	unsigned clen;
	int out;

	if (len < VPN_TRAILER)
		return -1;
	clen = len - VPN_TRAILER;
	memcpy(iv, salt, 4);
	memcpy(iv + 4, p + clen, 8);
	memcpy(tag, p + clen + 8, 16);
	if (EVP_DecryptInit_ex(vpn.ctx, NULL, NULL, NULL, iv) != 1 ||
	    (clen > 0 && EVP_DecryptUpdate(vpn.ctx, p, &out, p, (int)clen) != 1) ||
	    EVP_CIPHER_CTX_ctrl(vpn.ctx, EVP_CTRL_GCM_SET_TAG, 16, tag) != 1 ||
	    EVP_DecryptFinal_ex(vpn.ctx, p + clen, &out) != 1)
		return -1;
	rte_pktmbuf_trim(m, (uint16_t)(rte_pktmbuf_mtod(m, uint8_t *) + rte_pktmbuf_data_len(m) -
				       (p + clen)));
	set_lengths(ip, -VPN_TRAILER);
	return 0;
}

static void
vpn_process(struct nf_ctx *ctx, struct rte_mbuf **pkts, uint16_t n, int *verdict)
{
	uint16_t i;

	(void)ctx;
	for (i = 0; i < n; i++) {
		struct rte_ipv4_hdr *ip = nf_ipv4(pkts[i]);
		unsigned len;
		uint8_t *p = ip != NULL ? payload_of(pkts[i], ip, &len) : NULL;

		if (p == NULL) {
			vpn.passed++;
			continue;
		}
		if ((vpn.decrypt ? open_sealed : seal)(pkts[i], ip, p, len) != 0) {
			if (vpn.decrypt)
				vpn.auth_fail++;
			verdict[i] = NF_DROP;
			continue;
		}
		vpn.done++;
		vpn.bytes += len;
	}
}

static void
vpn_report(struct nf_ctx *ctx, FILE *out)
{
	(void)ctx;
	fprintf(out, ", \"mode\": \"%s\", \"packets_crypted\": %" PRIu64 ", \"bytes_crypted\": %"
		PRIu64 ", \"auth_fail\": %" PRIu64 ", \"no_room\": %" PRIu64 ", \"passed\": %" PRIu64,
		vpn.decrypt ? "decrypt" : "encrypt", vpn.done, vpn.bytes, vpn.auth_fail,
		vpn.no_room, vpn.passed);
}

static void
vpn_fini(struct nf_ctx *ctx)
{
	(void)ctx;
	EVP_CIPHER_CTX_free(vpn.ctx);
}

const struct nf_type nf_type_vpn = {
	.name = "vpn",
	.help = "    --vpn-key HEX        AES-128 key, 32 hex digits (default: a fixed test key)\n"
		"    --vpn-mode MODE      encrypt (default) or decrypt\n",
	.options = vpn_options,
	.parse = vpn_parse,
	.init = vpn_init,
	.process = vpn_process,
	.report = vpn_report,
	.fini = vpn_fini,
};
