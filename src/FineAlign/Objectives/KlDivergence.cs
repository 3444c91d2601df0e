using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace FineAlign.Objectives;

/// <summary>Which per-token KL estimate feeds the reward (Schulman, "Approximating KL divergence", 2020).</summary>
public enum KlEstimator
{
    /// <summary>k1 = log π_old − log π_ref (unbiased, can be negative).</summary>
    K1,
    /// <summary>k3 = (e^ℓ − 1) − ℓ with ℓ = log π_ref − log π_old (unbiased, always ≥ 0).</summary>
    K3,
}

/// <summary>KL estimates between a policy and its reference, and the entropy of a policy, per token (Schulman 2020).</summary>
public static class Kl
{
    /// <summary>Per-token KL estimate between the sampling policy and the reference, 0 on padding.</summary>
    public static Tensor PerToken(Tensor logp, Tensor refLogp, Tensor mask, KlEstimator estimator = KlEstimator.K1)
    {
        Masked.CheckSame(logp, refLogp, "reference log-probs");
        Masked.CheckSame(logp, mask, "mask");
        using var scope = NewDisposeScope();
        var m = Masked.AsFloatMask(mask);
        var lp = Masked.ZeroPadding(logp.to(float32), m);
        var lr = Masked.ZeroPadding(refLogp.to(float32), m);
        Tensor kl;
        if (estimator == KlEstimator.K1)
            kl = lp - lr;
        else
        {
            var l = lr - lp; // ℓ = log π_ref − log π
            kl = l.exp() - 1 - l;
        }
        return Masked.ZeroPadding(kl, m).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Exact KL(π ‖ π_ref) of the next-token distributions at every position:
    /// Σ_v π(v)(log π(v) − log π_ref(v)), from logits [B, T, V]; 0 on padding. (TLCR's reference run uses this.)
    /// </summary>
    public static Tensor FullPerToken(Tensor logits, Tensor refLogits, Tensor mask)
    {
        if (logits.dim() != 3 || !logits.shape.SequenceEqual(refLogits.shape))
            throw new FineAlignException($"logits [{Masked.Shape(logits)}] and reference logits [{Masked.Shape(refLogits)}] must both be [batch, time, vocab]");
        Masked.CheckSame(logits.select(2, 0), mask, "mask");
        using var scope = NewDisposeScope();
        var m = Masked.AsFloatMask(mask);
        var pad = m.eq(0).unsqueeze(2);
        var lp = F.log_softmax(logits.to(float32).masked_fill(pad, 0), 2);
        var lq = F.log_softmax(refLogits.to(float32).masked_fill(pad, 0), 2);
        var kl = (lp.exp() * (lp - lq)).sum(2);
        return Masked.ZeroPadding(kl, m).MoveToOuterDisposeScope();
    }

    /// <summary>Entropy of the next-token distribution at every position, −Σ_v π(v) log π(v), [B, T], 0 on padding.</summary>
    public static Tensor Entropy(Tensor logits, Tensor mask)
    {
        if (logits.dim() != 3)
            throw new FineAlignException($"logits must be [batch, time, vocab], got [{Masked.Shape(logits)}]");
        Masked.CheckSame(logits.select(2, 0), mask, "mask");
        using var scope = NewDisposeScope();
        var m = Masked.AsFloatMask(mask);
        var lp = F.log_softmax(logits.to(float32).masked_fill(m.eq(0).unsqueeze(2), 0), 2);
        return Masked.ZeroPadding((lp.exp() * lp).sum(2).neg(), m).MoveToOuterDisposeScope();
    }
}

/// <summary>A KL coefficient β that may adapt during training.</summary>
public abstract class KlController
{
    protected KlController(double value) => Value = value;

    /// <summary>The current β.</summary>
    public double Value { get; protected set; }

    /// <summary>Feed the measured KL of the last batch and how many samples it covered.</summary>
    public abstract void Update(double currentKl, long steps);
}

/// <summary>Constant β.</summary>
public sealed class FixedKlController : KlController
{
    public FixedKlController(double value) : base(value) { }
    public override void Update(double currentKl, long steps) { }
}

/// <summary>
/// Adaptive β (Ziegler et al. 2019, arXiv 1909.08593): β ← β·(1 + clip(KL/target − 1, −0.2, 0.2)·n/horizon).
/// </summary>
public sealed class AdaptiveKlController : KlController
{
    public AdaptiveKlController(double initial, double target, double horizon) : base(initial)
    {
        if (target <= 0) throw new FineAlignException($"adaptive KL target must be > 0, got {target}");
        if (horizon <= 0) throw new FineAlignException($"adaptive KL horizon must be > 0, got {horizon}");
        Target = target; Horizon = horizon;
    }

    public double Target { get; }
    public double Horizon { get; }

    public override void Update(double currentKl, long steps)
    {
        double error = Math.Clamp(currentKl / Target - 1, -0.2, 0.2);
        Value *= 1 + error * steps / Horizon;
    }
}
