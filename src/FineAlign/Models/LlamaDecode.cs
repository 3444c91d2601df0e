using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Models;

// The Llama forward with a KV cache and autograd off: prefill and every decode step of generation (issue #18).
// Same math as the training forward in Llama.cs, in fewer and larger libtorch calls: q/k/v and gate/up as one matmul
// each (FusedProjections: shared storage, HF names and per-projection LoRA kept), rotary applied to q and k together
// from a table computed once (RotaryTable), in-place residual adds and norm steps, and the cache's own positions and
// padding bias instead of a mask rebuilt every step (AttentionPlan, KvCache). The training forward is not changed.

public sealed partial class RMSNorm
{
    private static readonly long[] LastDim = { -1 };

    /// <summary>The same numbers as <see cref="forward"/> in fewer calls when input and gain are fp32 (no casts, in-place steps).</summary>
    internal Tensor DecodeForward(Tensor x)
    {
        if (x.dtype != ScalarType.Float32 || weight.dtype != ScalarType.Float32) return forward(x);
        var scale = x.pow(LiveScalars.Two).mean(LastDim, keepdim: true).add_(_eps).rsqrt_();
        return (x * scale).mul_(weight);
    }
}

internal static partial class Rotary
{
    /// <summary>
    /// Rotary embedding of <paramref name="x"/> [B, T, heads, D] with tables [B, T, 1, D] from <see cref="RotaryTable"/>:
    /// rotate_half(x)·sin = roll(x, D/2)·sin′ where sin′ has its first half negated, so the result equals
    /// <see cref="Apply"/>'s x·cos + rotate_half(x)·sin number for number, in four calls instead of seven.
    /// </summary>
    public static Tensor ApplyTable(Tensor x, Tensor cos, Tensor signedSin)
    {
        var rotated = x.roll(x.shape[^1] / 2, -1).mul_(signedSin);
        return (x * cos).add_(rotated);
    }
}

/// <summary>
/// cos and sign-folded sin for positions 0 … n − 1, computed once (as <see cref="Rotary.Tables(Tensor, float[])"/>
/// does per call: positions·inv_freq in fp32, then cos/sin) and indexed by each step's positions.
/// </summary>
internal sealed class RotaryTable : IDisposable
{
    private readonly float[] _invFreq;
    private Tensor? _cos, _sin;

    public RotaryTable(float[] invFreq) => _invFreq = invFreq;

    /// <summary>How many times the tables were computed (once per model unless a longer cache or another dtype comes).</summary>
    public int Builds { get; private set; }

    /// <summary>Tables for <paramref name="positions"/> [B, T] as [B, T, 1, D] in <paramref name="dtype"/>; positions must be below <paramref name="length"/>.</summary>
    public (Tensor Cos, Tensor SignedSin) Lookup(Tensor positions, long length, ScalarType dtype)
    {
        if (_cos is null || _cos.shape[0] < length || _cos.dtype != dtype || !Devices.Same(_cos, positions)) Build(length, dtype, positions.device);
        long b = positions.shape[0], t = positions.shape[1], d = _cos!.shape[1];
        var index = positions.reshape(-1);
        return (_cos.index_select(0, index).view(b, t, 1, d), _sin!.index_select(0, index).view(b, t, 1, d));
    }

    private void Build(long length, ScalarType dtype, Device device)
    {
        Builds++;
        length = Math.Max(length, _cos?.shape[0] ?? 0);
        using var scope = NewDisposeScope();
        long half = _invFreq.Length;
        var freqs = arange(length, ScalarType.Int64, device).to(ScalarType.Float32).unsqueeze(-1) * tensor(_invFreq, device: device);   // [n, D/2]
        var emb = cat(new[] { freqs, freqs }, -1);
        var sin = emb.sin();
        var signedSin = cat(new[] { sin.narrow(-1, 0, half).neg(), sin.narrow(-1, half, half) }, -1);
        _cos?.Dispose();
        _sin?.Dispose();
        _cos = emb.cos().to(dtype).DetachFromDisposeScope();
        _sin = signedSin.to(dtype).DetachFromDisposeScope();
    }

    public void Dispose()
    {
        _cos?.Dispose();
        _sin?.Dispose();
        _cos = _sin = null;
    }
}

internal sealed partial class LlamaAttention
{
    private FusedProjections? _qkv;

    internal Tensor DecodeForward(Tensor x, Tensor cos, Tensor signedSin, AttentionPlan plan, int layer)
    {
        _qkv ??= new FusedProjections(q_proj, k_proj, v_proj);
        long b = x.shape[0], t = x.shape[1], d = _headDim, nq = _heads, nk = _kvHeads;
        var qkv = _qkv.Forward(x, plan.Cache);                                                                  // [B, T, (H + 2·Hkv)·D]
        var qk = Rotary.ApplyTable(qkv.narrow(-1, 0, (nq + nk) * d).view(b, t, nq + nk, d), cos, signedSin);
        var q = qk.narrow(2, 0, nq).transpose(1, 2);                                                 // [B, H, T, D]
        var k = qk.narrow(2, nq, nk).transpose(1, 2);
        var v = qkv.narrow(-1, (nq + nk) * d, nk * d).view(b, t, nk, d).transpose(1, 2);
        var (keys, values) = plan.Cache!.Update(layer, k, v);
        var o = plan.AttendCached(q, keys, values);
        return o_proj.forward(o.transpose(1, 2).reshape(b, t, nq * d));
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _qkv?.Dispose();
        base.Dispose(disposing);
    }
}

internal sealed partial class LlamaMlp
{
    private FusedProjections? _gateUp;

    internal Tensor DecodeForward(Tensor x, KvCache? cache)
    {
        _gateUp ??= new FusedProjections(gate_proj, up_proj);
        long f = gate_proj.OutFeatures;
        var gateUp = _gateUp.Forward(x, cache);                                                           // [B, T, 2·FFN]
        var hidden = Activations.Apply(_act, gateUp.narrow(-1, 0, f)).mul_(gateUp.narrow(-1, f, f));
        return down_proj.forward(hidden);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _gateUp?.Dispose();
        base.Dispose(disposing);
    }
}

internal sealed partial class LlamaDecoderLayer
{
    /// <summary><see cref="Forward"/> on the decode path; <paramref name="x"/> is this forward's own tensor (added to in place).</summary>
    internal Tensor DecodeForward(Tensor x, Tensor cos, Tensor signedSin, AttentionPlan plan, int layer)
    {
        x = x.add_(self_attn.DecodeForward(input_layernorm.DecodeForward(x), cos, signedSin, plan, layer));
        return x.add_(mlp.DecodeForward(post_attention_layernorm.DecodeForward(x), plan.Cache));
    }
}

public sealed partial class LlamaForCausalLM
{
    private RotaryTable? _rotary;

    /// <summary>The forward with a cache and no autograd (generation's prefill and decode steps); see the file header.</summary>
    private Tensor DecodeHidden(Tensor inputIds, Tensor? attentionMask, KvCache cache)
    {
        using var scope = NewDisposeScope();
        inputIds = OnModelDevice(inputIds, model.embed_tokens.weight!);
        if (attentionMask is not null) attentionMask = OnModelDevice(attentionMask, model.embed_tokens.weight!);
        var x = ToComputeDtype(model.embed_tokens.forward(inputIds));   // a fresh tensor: the layers add into it in place
        var plan = AttentionPlan.Create(inputIds, attentionMask, cache, x.dtype, _slidingWindow);
        _rotary ??= new RotaryTable(_invFreq);
        var (cos, signedSin) = _rotary.Lookup(plan.Positions, cache.Capacity, x.dtype);
        for (int i = 0; i < model.layers.Count; i++)
            x = model.layers[i].DecodeForward(x, cos, signedSin, plan, i);
        x = model.norm.DecodeForward(x);
        cache.Advance((int)inputIds.shape[1]);
        return x.MoveToOuterDisposeScope();
    }

    private readonly TransposedWeight _headTransposed = new();

    /// <summary>Decode-path bookkeeping for tests: Wᵀ copies of the head, rotary table builds.</summary>
    internal (int HeadCopies, int RotaryBuilds) DecodeStats => (_headTransposed.Copies, _rotary?.Builds ?? 0);

    /// <summary>
    /// The LM head on a decode step's hidden states reads a <see cref="TransposedWeight"/> copy of the head (refreshed
    /// once per cache): the 32000 × 288 one-row matmul streams at the memory bandwidth instead of ~4 GB/s per core. The
    /// prefill's (first pass's) head keeps nn.Linear's layout, so a one-token call makes no copy.
    /// </summary>
    public override Tensor DecodeLmHead(Tensor hidden, KvCache cache)
    {
        if (!cache.DecodeLayout || cache.Passes < 2 || is_grad_enabled()) return LmHead(hidden);
        var w = lm_head?.weight ?? model.embed_tokens.weight!;
        return hidden.matmul(_headTransposed.Get(w, hidden.dtype, cache));
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) { _rotary?.Dispose(); _headTransposed.Dispose(); }
        base.Dispose(disposing);
    }
}
