/* latent_cache.h - the paged latent cache shared by the MLA paths (SPEC sections 8 and 9):
 * kv_cache [N, bs, 576] (= [c_kv 512 | k_pe 64]) in bf16, or fp8e4m3 with a per-tensor scale
 * k_scale [1] f32 (value = code * k_scale), addressed through block_table [B, max_blocks] i32.
 */
#ifndef ATTN_LATENT_CACHE_H
#define ATTN_LATENT_CACHE_H

#include "hx.h"
#include "ref_mla.h"

/* fp8 scale when the case gives none: the sd-1 latent rows (|x| < 3.47) then use codes up to
 * about 280 of fp8's 448, and 1/80 is not a power of two, so code * scale is not exact in
 * bf16 and the emulated kernel's K/V rounding point is exercised. */
#define HX_LATENT_K_SCALE 0.0125

/* Defaults and checks of the cache keys: block_size (64), kv_dtype (bf16; bf16 or fp8e4m3),
 * k_scale (fp8 only; HX_LATENT_K_SCALE). */
int hx_latent_cache_check_case(hx_case *c, hx_err *e);
/* Add block_table, kv_cache and (fp8) k_scale for n sequences of lens[b] cached tokens.
 * Row values are sd-1 normals generated in bf16 (keyed by the slot), stored as bf16 or as
 * fp8(x / k_scale); every slot no sequence uses, in used blocks or not, holds NaN. */
int hx_latent_cache_make(const hx_case *c, hx_tensors *in, const int32_t *lens, int n, hx_err *e);
/* The checks of (possibly loaded) cache inputs: shapes, dtypes, table entries inside the pool,
 * a positive finite k_scale. */
int hx_latent_cache_check(const hx_case *c, const hx_tensors *in, const int32_t *lens, int n,
                          hx_err *e);
/* The reference's view of the inputs. */
ref_mla_cache hx_latent_cache_ref(const hx_case *c, const hx_tensors *in);

#endif /* ATTN_LATENT_CACHE_H */
