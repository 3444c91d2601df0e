using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Models;

/// <summary>
/// Wᵀ of a weight W [out, in] as its own contiguous [in, out] tensor: the decode layout of the wide one-row matmuls
/// (LM head, fused q/k/v, fused gate/up), issue #18.
/// </summary>
/// <remarks>
/// Why: x·Wᵀ for one (or a few) rows against nn.Linear's [out, in] weight runs libtorch's (MKL's) dot-product gemv,
/// which reads W at ~4 GB/s per core — compute-bound on one short reduction per output. The same product against Wᵀ
/// stored [in, out] (x·Wᵀ as a running sum of rows of Wᵀ) streams at the memory bandwidth: 2–5× faster at one row for
/// the 32000 × 288 head, ~1.8× for q/k/v and gate/up, not faster for down_proj (288 outputs of 768 inputs), so that
/// one keeps nn.Linear's layout (bench `--workload gemv`, bench/RESULTS.md).
///
/// A copy, not shared storage: Wᵀ as a view would make the parameter itself non-contiguous and change the training
/// forward's numbers. Staleness: the copy is refreshed once per <see cref="KvCache"/> (keyed on <see cref="KvCache.Id"/>).
/// A cache holds keys and values computed from the weights, so the weights are fixed for as long as the cache is in valid
/// use, and an optimizer step, weight sync or checkpoint load between two generation calls is seen by the next one. The
/// buffer is kept between calls (refreshed with copy_, not reallocated) and freed with the model.
/// </remarks>
internal sealed class TransposedWeight : IDisposable
{
    private Tensor? _wt;
    private long _cacheId = -1;

    /// <summary>How many times Wᵀ was copied from the weight (once per cache that used it; tests check it is not per step).</summary>
    public int Copies { get; private set; }

    /// <summary>Wᵀ [in, out] of <paramref name="weight"/> in <paramref name="dtype"/>, copied when <paramref name="cache"/> is new to it.</summary>
    public Tensor Get(Tensor weight, ScalarType dtype, KvCache cache)
    {
        if (_wt is null || _wt.dtype != dtype || !Devices.Same(_wt, weight) || _wt.shape[0] != weight.shape[1] || _wt.shape[1] != weight.shape[0])
        {
            _wt?.Dispose();
            _wt = empty(new[] { weight.shape[1], weight.shape[0] }, dtype, weight.device).DetachFromDisposeScope();
            _cacheId = -1;
        }
        if (_cacheId != cache.Id)
        {
            using var noGrad = no_grad();
            using var scope = NewDisposeScope();
            _wt.copy_(weight.detach().t());
            _cacheId = cache.Id;
            Copies++;
        }
        return _wt;
    }

    /// <summary>Whether a forward through <paramref name="cache"/> should use the decode layout: a decode step (the prompt is already cached) with the layout on.</summary>
    public static bool Use(KvCache? cache) => cache is { DecodeLayout: true, Length: > 0 } && !is_grad_enabled();

    public void Dispose()
    {
        _wt?.Dispose();
        _wt = null;
        _cacheId = -1;
    }
}
