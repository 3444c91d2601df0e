using FineAlign.Rewards;
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

/// <summary>Clipped policy loss and its metrics (metrics are detached plain numbers).</summary>
public sealed record PolicyLossResult(Tensor Loss, double ClipFraction, double ApproxKl);

/// <summary>Clipped value loss and the fraction of tokens where the clipped term won.</summary>
public sealed record ValueLossResult(Tensor Loss, double ClipFraction);

/// <summary>
/// PPO for RLHF as pure tensor functions (Schulman et al. 2017, arXiv 1707.06347; cross-checked with TRL ppo_trainer).
/// Every per-token tensor is [B, T] over response tokens; <c>mask</c> is [B, T] (bool or float),
/// 1 on valid response tokens. Masked positions never enter a sum, a mean or a GAE recursion,
/// and every per-token output is 0 there.
/// </summary>
public static class Ppo
{
    /// <summary>Per-token KL estimate between the sampling policy and the reference, 0 on padding.</summary>
    public static Tensor KlPerToken(Tensor logp, Tensor refLogp, Tensor mask, KlEstimator estimator = KlEstimator.K1)
    {
        CheckSame(logp, refLogp, "reference log-probs");
        CheckSame(logp, mask, "mask");
        using var scope = NewDisposeScope();
        var m = AsFloatMask(mask);
        var lp = ZeroPadding(logp.to(float32), m);
        var lr = ZeroPadding(refLogp.to(float32), m);
        Tensor kl;
        if (estimator == KlEstimator.K1)
            kl = lp - lr;
        else
        {
            var l = lr - lp; // ℓ = log π_ref − log π
            kl = l.exp() - 1 - l;
        }
        return ZeroPadding(kl, m).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Exact KL(π ‖ π_ref) of the next-token distributions at every position:
    /// Σ_v π(v)(log π(v) − log π_ref(v)), from logits [B, T, V]; 0 on padding. (TLCR's reference run uses this.)
    /// </summary>
    public static Tensor FullKlPerToken(Tensor logits, Tensor refLogits, Tensor mask)
    {
        if (logits.dim() != 3 || !logits.shape.SequenceEqual(refLogits.shape))
            throw new FineAlignException($"logits [{Shape(logits)}] and reference logits [{Shape(refLogits)}] must both be [batch, time, vocab]");
        CheckSame(logits.select(2, 0), mask, "mask");
        using var scope = NewDisposeScope();
        var m = AsFloatMask(mask);
        var pad = m.eq(0).unsqueeze(2);
        var lp = F.log_softmax(logits.to(float32).masked_fill(pad, 0), 2);
        var lq = F.log_softmax(refLogits.to(float32).masked_fill(pad, 0), 2);
        var kl = (lp.exp() * (lp - lq)).sum(2);
        return ZeroPadding(kl, m).MoveToOuterDisposeScope();
    }

    /// <summary>Entropy of the next-token distribution at every position, −Σ_v π(v) log π(v), [B, T], 0 on padding.</summary>
    public static Tensor Entropy(Tensor logits, Tensor mask)
    {
        if (logits.dim() != 3)
            throw new FineAlignException($"logits must be [batch, time, vocab], got [{Shape(logits)}]");
        CheckSame(logits.select(2, 0), mask, "mask");
        using var scope = NewDisposeScope();
        var m = AsFloatMask(mask);
        var lp = F.log_softmax(logits.to(float32).masked_fill(m.eq(0).unsqueeze(2), 0), 2);
        return ZeroPadding((lp.exp() * lp).sum(2).neg(), m).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// PPO's per-token reward r_t = s_t − β·kl_t, where s is the task reward tensor of the dense reward
    /// contract. If <paramref name="endedWithEos"/> is given, rows that were cut by the length limit
    /// (false) lose <paramref name="missingEosPenalty"/> on their score, i.e. on the last valid token (TRL).
    /// The KL term itself is added in one place: <see cref="KlShaping.Apply(Tensor, Tensor, double, Tensor)"/>.
    /// </summary>
    public static Tensor ShapedRewards(Tensor taskRewards, Tensor kl, Tensor mask, double beta,
        Tensor? endedWithEos = null, double missingEosPenalty = 0.0)
    {
        using var scope = NewDisposeScope();
        var task = taskRewards;
        if (endedWithEos is not null && missingEosPenalty != 0.0)
        {
            if (endedWithEos.dim() != 1 || endedWithEos.shape[0] != taskRewards.shape[0])
                throw new FineAlignException($"ended-with-EOS flags must be [batch] = [{taskRewards.shape[0]}], got [{Shape(endedWithEos)}]");
            var penalty = endedWithEos.to(ScalarType.Bool).logical_not().to(float32) * missingEosPenalty;
            task = taskRewards.to(float32) - SequenceRewardSource.PlaceOnLastToken(penalty, mask);
        }
        return KlShaping.Apply(task, kl, beta, mask).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Generalised advantage estimation (Schulman et al. 2016) over the valid tokens of each row:
    /// δ_t = r_t + γ V_{t+1} − V_t ; A_t = δ_t + γ λ A_{t+1} ; returns R_t = A_t + V_t.
    /// V and A after the last valid token are 0; a masked position ends the recursion (nothing flows
    /// across it), and advantages/returns are 0 on masked positions. No gradient flows.
    /// </summary>
    public static (Tensor Advantages, Tensor Returns) Gae(Tensor rewards, Tensor values, Tensor mask,
        double gamma = 1.0, double lambda = 0.95)
    {
        CheckSame(rewards, values, "values");
        CheckSame(rewards, mask, "mask");
        int b = (int)rewards.shape[0], t = (int)rewards.shape[1];
        float[] r, v, m;
        using (no_grad())
        using (NewDisposeScope())
        {
            r = rewards.detach().to(float32).cpu().contiguous().data<float>().ToArray();
            v = values.detach().to(float32).cpu().contiguous().data<float>().ToArray();
            m = AsFloatMask(mask).cpu().contiguous().data<float>().ToArray();
        }
        var adv = new float[b * t];
        var ret = new float[b * t];
        for (int i = 0; i < b; i++)
        {
            double nextValue = 0, nextAdv = 0; // what lies after the current token; 0 past the end
            for (int j = t - 1; j >= 0; j--)
            {
                int k = i * t + j;
                if (m[k] == 0) { nextValue = 0; nextAdv = 0; continue; }
                double delta = r[k] + gamma * nextValue - v[k];
                double a = delta + gamma * lambda * nextAdv;
                adv[k] = (float)a;
                ret[k] = (float)(a + v[k]);
                nextValue = v[k];
                nextAdv = a;
            }
        }
        var device = rewards.device;
        return (tensor(adv, new long[] { b, t }).to(device), tensor(ret, new long[] { b, t }).to(device));
    }

    /// <summary>Mean of <paramref name="values"/> over valid positions (all of them, or per row with <paramref name="dim"/>); 0 if none.</summary>
    public static Tensor MaskedMean(Tensor values, Tensor mask, long? dim = null)
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
    public static Tensor MaskedVar(Tensor values, Tensor mask, bool unbiased = true)
    {
        CheckSame(values, mask, "mask");
        using var scope = NewDisposeScope();
        var m = AsFloatMask(mask);
        var mean = MaskedMean(values, m);
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
        var mean = MaskedMean(x, m);
        var variance = MaskedVar(x, m);
        var w = (x - mean) * (variance + 1e-8).rsqrt();
        if (!shiftMean) w = w + mean;
        return ZeroPadding(w, m).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Unreduced clipped surrogate per token: max(−A ρ, −A clip(ρ, 1−ε, 1+ε)) with ρ = exp(logp − oldLogp); 0 on padding.
    /// Shared by PPO and the group methods, which differ only in how they reduce it.
    /// </summary>
    public static Tensor ClippedSurrogate(Tensor logp, Tensor oldLogp, Tensor advantages, Tensor mask, double clip = 0.2)
    {
        CheckSame(logp, oldLogp, "old log-probs");
        CheckSame(logp, advantages, "advantages");
        CheckSame(logp, mask, "mask");
        using var scope = NewDisposeScope();
        var m = AsFloatMask(mask);
        // Inputs are zeroed on padding first, so garbage there cannot turn into inf·0 = NaN (also in backward).
        var ratio = (ZeroPadding(logp, m) - ZeroPadding(oldLogp.detach(), m)).exp();
        var a = ZeroPadding(advantages.detach().to(float32), m);
        var pg1 = -a * ratio;
        var pg2 = -a * ratio.clamp(1 - clip, 1 + clip);
        return ZeroPadding(maximum(pg1, pg2), m).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// PPO-clip policy loss, masked mean of <see cref="ClippedSurrogate"/> over valid tokens (ε = 0.2).
    /// Metrics: clipfrac = share of valid tokens where the clipped term is larger;
    /// approxkl = 0.5 · mean((logp − oldLogp)²) (TRL).
    /// </summary>
    public static PolicyLossResult PolicyLoss(Tensor logp, Tensor oldLogp, Tensor advantages, Tensor mask, double clip = 0.2)
    {
        using var scope = NewDisposeScope();
        var m = AsFloatMask(mask);
        var loss = MaskedMean(ClippedSurrogate(logp, oldLogp, advantages, m, clip), m);
        double clipFrac, approxKl;
        using (no_grad())
        {
            var logRatio = ZeroPadding(logp.detach() - oldLogp.detach(), m);
            var ratio = logRatio.exp();
            var a = ZeroPadding(advantages.detach().to(float32), m);
            var clipped = gt(-a * ratio.clamp(1 - clip, 1 + clip), -a * ratio).to(float32);
            clipFrac = MaskedMean(clipped, m).item<float>();
            approxKl = 0.5 * MaskedMean(logRatio.square(), m).item<float>();
        }
        return new PolicyLossResult(loss.MoveToOuterDisposeScope(), clipFrac, approxKl);
    }

    /// <summary>
    /// Clipped value loss: V_clip = V_old + clip(V − V_old, −ε_v, ε_v);
    /// L = ½ · masked mean of max((V − R)², (V_clip − R)²) (ε_v = 0.2). clipfrac = share where the clipped term wins.
    /// </summary>
    public static ValueLossResult ValueLoss(Tensor values, Tensor oldValues, Tensor returns, Tensor mask, double clip = 0.2)
    {
        CheckSame(values, oldValues, "old values");
        CheckSame(values, returns, "returns");
        CheckSame(values, mask, "mask");
        using var scope = NewDisposeScope();
        var m = AsFloatMask(mask);
        var v = ZeroPadding(values, m);
        var old = ZeroPadding(oldValues.detach().to(float32), m);
        var ret = ZeroPadding(returns.detach().to(float32), m);
        var vClip = old + (v - old).clamp(-clip, clip);
        var l1 = (v - ret).square();
        var l2 = (vClip - ret).square();
        var loss = 0.5 * MaskedMean(maximum(l1, l2), m);
        double clipFrac;
        using (no_grad()) clipFrac = MaskedMean(gt(l2, l1).to(float32), m).item<float>();
        return new ValueLossResult(loss.MoveToOuterDisposeScope(), clipFrac);
    }

    /// <summary>x with every masked (padding) position set to 0; NaN/Inf there are replaced too, and get no gradient.</summary>
    internal static Tensor ZeroPadding(Tensor x, Tensor floatMask) => x.masked_fill(floatMask.eq(0), 0);

    internal static Tensor AsFloatMask(Tensor mask) => mask.dtype == float32 ? mask.detach() : mask.detach().to(float32);

    internal static string Shape(Tensor t) => string.Join(", ", t.shape);

    internal static void CheckSame(Tensor reference, Tensor other, string what)
    {
        if (reference.dim() != 2)
            throw new FineAlignException($"per-token tensors must be [batch, time], got [{Shape(reference)}]");
        if (!reference.shape.SequenceEqual(other.shape))
            throw new FineAlignException($"{what} [{Shape(other)}] does not match [{Shape(reference)}]");
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
