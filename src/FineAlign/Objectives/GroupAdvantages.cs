using FineAlign.Rewards;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Objectives;

/// <summary>GRPO's `scale_rewards`: divide the centred rewards by the group std, the batch std, or nothing (Dr. GRPO).</summary>
public enum RewardScaling { Group, Batch, None }

/// <summary>How a per-token loss [B, T] becomes a scalar.</summary>
public enum LossAggregation
{
    /// <summary>Mean over sequences of each sequence's token mean (GRPO paper).</summary>
    Grpo,
    /// <summary>Sum over all valid tokens / number of valid tokens (DAPO).</summary>
    Token,
    /// <summary>Sum over all valid tokens / (batch × max length) (Dr. GRPO).</summary>
    DrGrpo,
}

/// <summary>Per-sequence advantages [B] and how many groups had zero reward spread (all-equal rewards).</summary>
public sealed record GroupAdvantageResult(Tensor Advantages, int ZeroStdGroups);

/// <summary>
/// Critic-free advantages from G samples per prompt. Rewards are [B] with B = prompts × G, each
/// prompt's G samples contiguous (row i belongs to group i / G), as TRL lays them out.
/// GRPO: Shao et al. 2024 (arXiv 2402.03300); RLOO: Ahmadian et al. 2024 (arXiv 2402.14740);
/// REINFORCE++: Hu 2025 (arXiv 2501.03262).
/// </summary>
public static class GroupAdvantages
{
    /// <summary>Std + this in GRPO's denominator (TRL), so a zero-spread group gives 0, not NaN.</summary>
    public const double StdEpsilon = 1e-4;

    /// <summary>
    /// GRPO: A_i = (R_i − mean_group R) / (std + 1e-4), std unbiased over the group (Group), over the
    /// whole batch (Batch), or no division (None). Zero-spread groups get A = 0 and are counted.
    /// </summary>
    public static GroupAdvantageResult Grpo(Tensor rewards, int groupSize, RewardScaling scaling = RewardScaling.Group)
    {
        var grouped = Grouped(rewards, groupSize, "GRPO");
        using var scope = NewDisposeScope();
        var mean = grouped.mean(new long[] { 1 }, keepdim: true);
        var groupStd = grouped.std(1, unbiased: true, keepdim: true);
        var centred = grouped - mean;
        Tensor adv = scaling switch
        {
            RewardScaling.Group => centred / (groupStd + StdEpsilon),
            RewardScaling.Batch => centred / (grouped.std(unbiased: true) + StdEpsilon),
            RewardScaling.None => centred,
            _ => throw new FineAlignException($"unknown reward scaling {scaling}"),
        };
        int zero = CountZeroSpread(grouped);
        return new GroupAdvantageResult(adv.reshape(-1).MoveToOuterDisposeScope(), zero);
    }

    /// <summary>
    /// RLOO: baseline b_i = (Σ_group R − R_i)/(G − 1), A_i = R_i − b_i. Needs G ≥ 2.
    /// Fold the KL into R first with <see cref="SequenceRewards"/> (R = Σ_t s_t − β Σ_t kl_t).
    /// </summary>
    public static GroupAdvantageResult Rloo(Tensor rewards, int groupSize)
    {
        var grouped = Grouped(rewards, groupSize, "RLOO");
        using var scope = NewDisposeScope();
        var baseline = (grouped.sum(1, keepdim: true) - grouped) / (groupSize - 1);
        var adv = (grouped - baseline).reshape(-1);
        return new GroupAdvantageResult(adv.MoveToOuterDisposeScope(), CountZeroSpread(grouped));
    }

    /// <summary>
    /// Sequence rewards for the group methods: Σ_t (s_t − β kl_t) over valid tokens, [B]
    /// (β = 0 just sums the dense task rewards). The KL term goes through <see cref="KlShaping"/>.
    /// </summary>
    public static Tensor SequenceRewards(Tensor taskRewards, Tensor mask, Tensor? kl = null, double beta = 0.0)
    {
        using var scope = NewDisposeScope();
        var r = KlShaping.Apply(taskRewards, kl ?? zeros_like(taskRewards, dtype: float32), beta, mask);
        return r.sum(1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// REINFORCE++: per-token rewards s_t − β kl_t (s = the dense task reward, e.g. the score on the
    /// last token), returns G_t = Σ_{k ≥ t} γ^{k−t} r_k within each row (γ = 1), then normalised over all
    /// valid tokens of the batch with the population variance clamped at 1e-8 (OpenRLHF, <see cref="Masked.Normalize"/>). [B, T], 0 on padding.
    /// </summary>
    public static Tensor ReinforcePlusPlus(Tensor taskRewards, Tensor kl, Tensor mask, double beta, double gamma = 1.0)
    {
        using var scope = NewDisposeScope();
        return ReinforcePlusPlusFromShaped(KlShaping.Apply(taskRewards, kl, beta, mask), mask, gamma).MoveToOuterDisposeScope();
    }

    /// <summary>REINFORCE++ on per-token rewards that already carry the KL term (r_t = s_t − β kl_t).</summary>
    public static Tensor ReinforcePlusPlusFromShaped(Tensor shapedRewards, Tensor mask, double gamma = 1.0)
    {
        using var scope = NewDisposeScope();
        // Reward-to-go is GAE with V ≡ 0 and λ = 1; normalised as OpenRLHF does (population variance, clamped).
        var (returns, _) = Ppo.Gae(shapedRewards, zeros_like(shapedRewards), mask, gamma, 1.0);
        return Masked.Normalize(returns, mask).MoveToOuterDisposeScope();
    }

    /// <summary>Broadcast per-sequence advantages [B] to the valid tokens of each response, [B, T].</summary>
    public static Tensor ToTokens(Tensor advantages, Tensor mask)
    {
        if (advantages.dim() != 1 || mask.dim() != 2 || advantages.shape[0] != mask.shape[0])
            throw new FineAlignException($"advantages [{Masked.Shape(advantages)}] do not match mask [{Masked.Shape(mask)}]");
        using var scope = NewDisposeScope();
        return Masked.ZeroPadding(advantages.to(float32).unsqueeze(1).expand(mask.shape), Masked.AsFloatMask(mask)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Reduces a per-token loss [B, T] over valid tokens. <paramref name="maxLength"/> is Dr. GRPO's
    /// constant denominator (defaults to T, the padded width). Empty rows/batches give 0, not NaN.
    /// </summary>
    public static Tensor Aggregate(Tensor perTokenLoss, Tensor mask, LossAggregation mode, long? maxLength = null)
    {
        Masked.CheckSame(perTokenLoss, mask, "mask");
        using var scope = NewDisposeScope();
        var m = Masked.AsFloatMask(mask);
        var x = Masked.ZeroPadding(perTokenLoss, m);
        Tensor loss = mode switch
        {
            LossAggregation.Grpo => (x.sum(1) / m.sum(1).clamp_min(1.0)).mean(),
            LossAggregation.Token => x.sum() / m.sum().clamp_min(1.0),
            LossAggregation.DrGrpo => x.sum() / (perTokenLoss.shape[0] * (double)(maxLength ?? perTokenLoss.shape[1])),
            _ => throw new FineAlignException($"unknown loss aggregation {mode}"),
        };
        return loss.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The group methods' policy loss: the PPO clipped surrogate per token (advantages [B, T], e.g.
    /// from <see cref="ToTokens"/>), plus β_KL · k3(π_θ ‖ π_ref) per token if <paramref name="refLogp"/> is
    /// given (GRPO; TRL's default β is 0), reduced with <paramref name="mode"/>.
    /// </summary>
    public static Tensor PolicyLoss(Tensor logp, Tensor oldLogp, Tensor tokenAdvantages, Tensor mask,
        LossAggregation mode = LossAggregation.Grpo, double clip = 0.2, Tensor? refLogp = null, double klBeta = 0.0,
        long? maxLength = null)
    {
        using var scope = NewDisposeScope();
        var perToken = Ppo.ClippedSurrogate(logp, oldLogp, tokenAdvantages, mask, clip);
        if (refLogp is not null && klBeta != 0.0)
        {
            Masked.CheckSame(logp, refLogp, "reference log-probs");
            var m = Masked.AsFloatMask(mask);
            var l = Masked.ZeroPadding(refLogp.detach(), m) - Masked.ZeroPadding(logp, m); // k3 with gradient through log π_θ
            perToken = perToken + klBeta * Masked.ZeroPadding(l.exp() - 1 - l, m);
        }
        return Aggregate(perToken, mask, mode, maxLength).MoveToOuterDisposeScope();
    }

    private static Tensor Grouped(Tensor rewards, int groupSize, string method)
    {
        if (groupSize < 2)
            throw new FineAlignException($"{method} needs at least 2 samples per prompt (group size {groupSize}); the baseline is undefined for a single sample");
        if (rewards.dim() != 1)
            throw new FineAlignException($"{method} rewards must be [batch], got [{Masked.Shape(rewards)}]");
        if (rewards.shape[0] % groupSize != 0)
            throw new FineAlignException($"{method}: batch of {rewards.shape[0]} rewards is not a multiple of the group size {groupSize}");
        RewardSource.CheckFinite(method + " rewards", rewards);
        return rewards.detach().to(float32).view(-1, groupSize);
    }

    /// <summary>|std| ≤ atol + rtol·|0| with torch.isclose's defaults: TRL's test for a zero-spread group.</summary>
    public const double ZeroStdTolerance = 1e-8;

    /// <summary>
    /// Groups whose reward std (unbiased, as TRL) is close to 0 in torch.isclose terms (|std| ≤ 1e-8), i.e. that give no
    /// learning signal: TRL's frac_reward_zero_std counts these.
    /// </summary>
    private static int CountZeroSpread(Tensor grouped)
    {
        using var scope = NewDisposeScope();
        return (int)grouped.std(1, unbiased: true).abs().le(ZeroStdTolerance).sum().item<long>();
    }
}
