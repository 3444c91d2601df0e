using static TorchSharp.torch;

namespace FineAlign.Objectives;

/// <summary>
/// Statistics over the valid positions of per-token tensors [B, T] (mask 1 on valid tokens, bool or float): padding
/// never enters a sum or a mean, and per-token outputs are 0 there.
/// </summary>
public static class Masked
{
    /// <summary>Mean of <paramref name="values"/> over valid positions (all of them, or per row with <paramref name="dim"/>); 0 if none.</summary>
    public static Tensor Mean(Tensor values, Tensor mask, long? dim = null)
    {
        CheckSame(values, mask, "mask");
        using var scope = NewDisposeScope();
        var m = AsFloatMask(mask);
        var x = ZeroPadding(values.to(float32), m);
        var res = dim is null ? x.sum() / m.sum().clamp_min(1.0) : x.sum(dim.Value) / m.sum(dim.Value).clamp_min(1.0);
        return res.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Variance over valid positions. Unbiased (Bessel, n/(n−1)) by default like TRL's masked_var;
    /// with fewer than 2 valid positions the variance is 0 rather than an error.
    /// </summary>
    public static Tensor Var(Tensor values, Tensor mask, bool unbiased = true)
    {
        CheckSame(values, mask, "mask");
        using var scope = NewDisposeScope();
        var m = AsFloatMask(mask);
        var mean = Mean(values, m);
        var sq = ZeroPadding(values.to(float32) - mean, m).square();
        var n = m.sum();
        var sumSq = sq.sum();
        var denom = unbiased ? (n - 1).clamp_min(1.0) : n.clamp_min(1.0);
        return (sumSq / denom).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Masked whitening (TRL masked_whiten): (x − mean) / sqrt(var + 1e-8) with mean/var over valid
    /// positions only. With <paramref name="shiftMean"/> false the mean is added back (scale only).
    /// Output is 0 on masked positions.
    /// </summary>
    public static Tensor Whiten(Tensor values, Tensor mask, bool shiftMean = true)
    {
        CheckSame(values, mask, "mask");
        using var scope = NewDisposeScope();
        var m = AsFloatMask(mask);
        var x = ZeroPadding(values.to(float32), m);
        var mean = Mean(x, m);
        var variance = Var(x, m);
        var w = (x - mean) * (variance + 1e-8).rsqrt();
        if (!shiftMean) w = w + mean;
        return ZeroPadding(w, m).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// OpenRLHF's advantage normalisation: (x − mean) · rsqrt(max(var, 1e-8)) with the mean and the population variance
    /// (÷ n) over valid positions. Output is 0 on masked positions.
    /// </summary>
    public static Tensor Normalize(Tensor values, Tensor mask)
    {
        CheckSame(values, mask, "mask");
        using var scope = NewDisposeScope();
        var m = AsFloatMask(mask);
        var x = ZeroPadding(values.to(float32), m);
        var mean = Mean(x, m);
        var variance = Var(x, m, unbiased: false);
        return ZeroPadding((x - mean) * variance.clamp_min(1e-8).rsqrt(), m).MoveToOuterDisposeScope();
    }

    /// <summary>x with every masked (padding) position set to 0; NaN/Inf there are replaced too, and get no gradient.</summary>
    public static Tensor ZeroPadding(Tensor x, Tensor floatMask) => x.masked_fill(floatMask.eq(0), 0);

    public static Tensor AsFloatMask(Tensor mask) => mask.dtype == float32 ? mask.detach() : mask.detach().to(float32);

    public static string Shape(Tensor t) => string.Join(", ", t.shape);

    public static void CheckSame(Tensor reference, Tensor other, string what)
    {
        if (reference.dim() != 2)
            throw new FineAlignException($"per-token tensors must be [batch, time], got [{Shape(reference)}]");
        if (!reference.shape.SequenceEqual(other.shape))
            throw new FineAlignException($"{what} [{Shape(other)}] does not match [{Shape(reference)}]");
    }
}
