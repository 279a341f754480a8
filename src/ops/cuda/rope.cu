/* rope.cu - rotary position embedding, rotate-half convention (HF LLaMA):
 * pair (i, i+hd/2), frequency theta^(-2i/hd) at position p:
 *   out_i = x_i cos - x_{i+h} sin,  out_{i+h} = x_{i+h} cos + x_i sin.
 * The backward is the rotation by -angle, accumulated. The angle and its
 * cos/sin are taken in double, as the CPU oracle does: at positions in the
 * thousands a float angle would be off by ~1e-4 radians. An odd head_dim
 * leaves its last channel unrotated. */
#include "common.cuh"

__global__ void rope_kernel(float *out, const float *x, const int *pos, int B, int n, int nh, int hd,
                            float theta, float sign, int accumulate) {
    int half = hd / 2, pairs = half + (hd & 1);  /* the odd channel is a "pair" passed through */
    size_t total = (size_t)B * n * nh * pairs;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(idx % pairs);
        size_t bth = idx / pairs;  /* (b*n + t)*nh + h */
        int t = (int)((bth / nh) % n);
        size_t base = bth * hd;
        if (i == half) {  /* odd head_dim: last channel unrotated */
            size_t k = base + hd - 1;
            out[k] = accumulate ? out[k] + x[k] : x[k];
            continue;
        }
        double ang = pos[t] * pow((double)theta, -2.0 * i / hd);
        float c = (float)cos(ang), s = (float)(sign * sin(ang));
        float x0 = x[base + i], x1 = x[base + i + half];
        float o0 = x0 * c - x1 * s, o1 = x1 * c + x0 * s;
        if (accumulate) { out[base + i] += o0; out[base + i + half] += o1; }
        else { out[base + i] = o0; out[base + i + half] = o1; }
    }
}

static void rope(float *out, const float *x, const int *pos, int B, int n, int nh, int hd, float theta,
                 float sign, int accumulate) {
    size_t total = (size_t)B * n * nh * (hd / 2 + (hd & 1));
    if (!total || !out) return;
    rope_kernel<<<grid_for(total, 256), 256, 0, cuda_stream()>>>(out, x, pos, B, n, nh, hd, theta, sign, accumulate);
    CUDA_LAUNCHED();
}

void cuda_rope_fwd(real *out, const real *x, const int *pos, int B, int n, int nh, int hd, real theta) {
    rope(out, x, pos, B, n, nh, hd, theta, 1.f, 0);
}
void cuda_rope_bwd(real *dx, const real *dout, const int *pos, int B, int n, int nh, int hd, real theta) {
    rope(dx, dout, pos, B, n, nh, hd, theta, -1.f, 1);
}
