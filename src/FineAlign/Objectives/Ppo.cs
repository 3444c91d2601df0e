using FineAlign.Rewards;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Objectives;

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
                throw new FineAlignException($"ended-with-EOS flags must be [batch] = [{taskRewards.shape[0]}], got [{Masked.Shape(endedWithEos)}]");
            var penalty = endedWithEos.to(ScalarType.Bool).logical_not().to(float32) * missingEosPenalty;
            task = taskRewards.to(float32) - SequenceRewardSource.PlaceOnLastToken(penalty, mask);
        }
        return KlShaping.Apply(task, kl, beta, mask).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Generalised advantage estimation (Schulman et al. 2016) over the valid tokens of each row:
    /// δ_t = r_t + γ V_{t+1} − V_t ; A_t = δ_t + γ λ A_{t+1} ; returns R_t = A_t + V_t.
    /// V and A after the last valid token are 0; a masked position ends the recursion (nothing flows
    /// across it), and advantages/returns are 0 on masked positions. No gradient flows. Runs on the inputs' device
    /// without copying to the host (T small tensor ops, not one per element).
    /// </summary>
    public static (Tensor Advantages, Tensor Returns) Gae(Tensor rewards, Tensor values, Tensor mask,
        double gamma = 1.0, double lambda = 0.95)
    {
        Masked.CheckSame(rewards, values, "values");
        Masked.CheckSame(rewards, mask, "mask");
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        // On the inputs' device, no host copies: a reverse scan over time of [B]-wide tensor ops. Float64 throughout and one
        // rounding to fp32 at the end, exactly as the scalar recursion this replaced (double accumulators, (float) per output).
        var device = rewards.device;
        var r = rewards.detach().to(float64);
        var v = values.detach().to(float64, device);
        var valid = mask.detach().to(device).ne(0);
        long b = rewards.shape[0], t = rewards.shape[1];
        if (t == 0) return (zeros(b, 0, float32, device).MoveToOuterDisposeScope(), zeros(b, 0, float32, device).MoveToOuterDisposeScope());
        double gl = gamma * lambda;
        var nextValue = zeros(b, float64, device); // V after the current token; 0 past the end and across padding
        var nextAdv = zeros(b, float64, device);
        var zero = zeros(b, float64, device);
        var advCols = new Tensor[t];
        var retCols = new Tensor[t];
        for (long j = t - 1; j >= 0; j--)
        {
            var m = valid.select(1, j);
            var vj = v.select(1, j);
            // Separate mul/add/sub (never a fused add with alpha), so each step rounds as the scalar code did.
            var delta = r.select(1, j).add(nextValue.mul(gamma)).sub(vj);
            var a = where(m, delta.add(nextAdv.mul(gl)), zero);
            advCols[j] = a;
            retCols[j] = where(m, a.add(vj), zero);
            nextValue = where(m, vj, zero);
            nextAdv = a;
        }
        var adv = stack(advCols, 1).to(float32);
        var ret = stack(retCols, 1).to(float32);
        return (adv.MoveToOuterDisposeScope(), ret.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Unreduced clipped surrogate per token: max(−A ρ, −A clip(ρ, 1−ε, 1+ε)) with ρ = exp(logp − oldLogp); 0 on padding.
    /// Shared by PPO and the group methods, which differ only in how they reduce it.
    /// </summary>
    public static Tensor ClippedSurrogate(Tensor logp, Tensor oldLogp, Tensor advantages, Tensor mask, double clip = 0.2)
    {
        Masked.CheckSame(logp, oldLogp, "old log-probs");
        Masked.CheckSame(logp, advantages, "advantages");
        Masked.CheckSame(logp, mask, "mask");
        using var scope = NewDisposeScope();
        var m = Masked.AsFloatMask(mask);
        // Inputs are zeroed on padding first, so garbage there cannot turn into inf·0 = NaN (also in backward).
        var ratio = (Masked.ZeroPadding(logp, m) - Masked.ZeroPadding(oldLogp.detach(), m)).exp();
        var a = Masked.ZeroPadding(advantages.detach().to(float32), m);
        var pg1 = -a * ratio;
        var pg2 = -a * ratio.clamp(1 - clip, 1 + clip);
        return Masked.ZeroPadding(maximum(pg1, pg2), m).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// PPO-clip policy loss, masked mean of <see cref="ClippedSurrogate"/> over valid tokens (ε = 0.2).
    /// Metrics: clipfrac = share of valid tokens where the clipped term is larger;
    /// approxkl = 0.5 · mean((logp − oldLogp)²) (TRL).
    /// </summary>
    public static PolicyLossResult PolicyLoss(Tensor logp, Tensor oldLogp, Tensor advantages, Tensor mask, double clip = 0.2)
    {
        using var scope = NewDisposeScope();
        var m = Masked.AsFloatMask(mask);
        var loss = Masked.Mean(ClippedSurrogate(logp, oldLogp, advantages, m, clip), m);
        var (clipFrac, approxKl) = ClipStatistics(logp, oldLogp, advantages, m, clip);
        return new PolicyLossResult(loss.MoveToOuterDisposeScope(), clipFrac, approxKl);
    }

    /// <summary>PPO's clipfrac (share of valid tokens where the clipped term is larger) and approxkl = 0.5 · mean((logp − oldLogp)²) (TRL).</summary>
    public static (double ClipFraction, double ApproxKl) ClipStatistics(Tensor logp, Tensor oldLogp, Tensor advantages, Tensor mask, double clip = 0.2)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var m = Masked.AsFloatMask(mask);
        var logRatio = Masked.ZeroPadding(logp.detach() - oldLogp.detach(), m);
        var ratio = logRatio.exp();
        var a = Masked.ZeroPadding(advantages.detach().to(float32), m);
        var clipped = gt(-a * ratio.clamp(1 - clip, 1 + clip), -a * ratio).to(float32);
        return (Masked.Mean(clipped, m).item<float>(), 0.5 * Masked.Mean(logRatio.square(), m).item<float>());
    }

    /// <summary>
    /// Clipped value loss: V_clip = V_old + clip(V − V_old, −ε_v, ε_v);
    /// L = ½ · masked mean of max((V − R)², (V_clip − R)²) (ε_v = 0.2). clipfrac = share where the clipped term wins.
    /// </summary>
    public static ValueLossResult ValueLoss(Tensor values, Tensor oldValues, Tensor returns, Tensor mask, double clip = 0.2)
    {
        Masked.CheckSame(values, oldValues, "old values");
        Masked.CheckSame(values, returns, "returns");
        Masked.CheckSame(values, mask, "mask");
        using var scope = NewDisposeScope();
        var m = Masked.AsFloatMask(mask);
        var v = Masked.ZeroPadding(values, m);
        var old = Masked.ZeroPadding(oldValues.detach().to(float32), m);
        var ret = Masked.ZeroPadding(returns.detach().to(float32), m);
        var vClip = old + (v - old).clamp(-clip, clip);
        var l1 = (v - ret).square();
        var l2 = (vClip - ret).square();
        var loss = 0.5 * Masked.Mean(maximum(l1, l2), m);
        double clipFrac;
        using (no_grad()) clipFrac = Masked.Mean(gt(l2, l1).to(float32), m).item<float>();
        return new ValueLossResult(loss.MoveToOuterDisposeScope(), clipFrac);
    }
}
