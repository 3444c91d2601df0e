using static TorchSharp.torch;

namespace FineAlign.Objectives;

/// <summary>
/// What every advantage estimator reads. <see cref="Rewards"/> are the per-token rewards of the dense reward contract
/// after KL shaping, r_t = s_t − β·kl_t, [B, T], 0 on padding; rows of one prompt's group are contiguous
/// (row i belongs to group i / <see cref="GroupSize"/>).
/// </summary>
public sealed record AdvantageInput
{
    public required Tensor Rewards { get; init; }
    public required Tensor Mask { get; init; }
    /// <summary>The critic's values [B, T] (GAE only).</summary>
    public Tensor? Values { get; init; }
    public int GroupSize { get; init; } = 1;
    public double Gamma { get; init; } = 1.0;
    public double Lambda { get; init; } = 0.95;
    /// <summary>GRPO's scale_rewards.</summary>
    public RewardScaling ScaleRewards { get; init; } = RewardScaling.Group;
    /// <summary>GAE: whiten the advantages over the batch's valid tokens.</summary>
    public bool Whiten { get; init; } = true;
}

/// <summary>Advantages and returns [B, T], 0 on padding (critic-free estimators return their advantages as returns, as verl).</summary>
public sealed record AdvantageResult(Tensor Advantages, Tensor Returns);

/// <summary>The one signature of an advantage estimator: a pure function of tensors.</summary>
public delegate AdvantageResult AdvantageEstimator(AdvantageInput input);

/// <summary>A registered estimator and what it needs from the trainer.</summary>
public sealed record AdvantageEstimatorInfo(string Name, AdvantageEstimator Estimate, bool NeedsValues, bool NeedsGroups, string Paper);

/// <summary>
/// Advantage estimators chosen by name (the shape of verl's core_algos.py registry). A new estimator is a pure function
/// <see cref="AdvantageEstimator"/> in its own file, added here (or with <see cref="Register"/>).
/// </summary>
public static class AdvantageEstimators
{
    public const string Gae = "gae", Grpo = "grpo", DrGrpo = "dr_grpo", Rloo = "rloo", ReinforcePlusPlus = "reinforce++";

    private static readonly Dictionary<string, AdvantageEstimatorInfo> Registry = new(StringComparer.Ordinal);

    static AdvantageEstimators()
    {
        Register(new(Gae, EstimateGae, NeedsValues: true, NeedsGroups: false, "Schulman et al. 2016, arXiv 1506.02438"));
        Register(new(Grpo, x => GroupOutcome(GroupAdvantages.Grpo(x.Rewards.sum(1), x.GroupSize, x.ScaleRewards).Advantages, x.Mask),
            NeedsValues: false, NeedsGroups: true, "Shao et al. 2024, arXiv 2402.03300"));
        Register(new(DrGrpo, x => GroupOutcome(GroupAdvantages.Grpo(x.Rewards.sum(1), x.GroupSize, RewardScaling.None).Advantages, x.Mask),
            NeedsValues: false, NeedsGroups: true, "Liu et al. 2025, arXiv 2503.20783"));
        Register(new(Rloo, x => GroupOutcome(GroupAdvantages.Rloo(x.Rewards.sum(1), x.GroupSize).Advantages, x.Mask),
            NeedsValues: false, NeedsGroups: true, "Ahmadian et al. 2024, arXiv 2402.14740"));
        Register(new(ReinforcePlusPlus, x =>
        {
            var a = GroupAdvantages.ReinforcePlusPlusFromShaped(x.Rewards, x.Mask, x.Gamma);
            return new AdvantageResult(a, a);
        }, NeedsValues: false, NeedsGroups: false, "Hu 2025, arXiv 2501.03262"));
    }

    public static void Register(AdvantageEstimatorInfo info) => Registry[info.Name] = info;

    public static IReadOnlyCollection<string> Names => Registry.Keys;

    /// <summary>The estimator registered under <paramref name="name"/> (spellings such as "reinforce_pp" or "dr-grpo" accepted).</summary>
    public static AdvantageEstimatorInfo Get(string name) =>
        Find(name) ?? throw new FineAlignException($"unknown advantage estimator '{name}' (one of {string.Join(", ", Registry.Keys)})");

    public static AdvantageEstimatorInfo? Find(string name) => Registry.GetValueOrDefault(Canonical(name));

    /// <summary>The registered spelling of a user's estimator name.</summary>
    public static string Canonical(string name) => name.Trim().ToLowerInvariant() switch
    {
        "reinforce-plus-plus" or "reinforce_pp" or "reinforcepp" or "reinforce_plus_plus" => ReinforcePlusPlus,
        "dr-grpo" or "drgrpo" => DrGrpo,
        var n => n,
    };

    /// <summary>GAE on the shaped rewards and the critic's values, whitened when asked (PPO).</summary>
    public static AdvantageResult EstimateGae(AdvantageInput x)
    {
        if (x.Values is null) throw new FineAlignException("GAE needs the value model's values");
        var (adv, returns) = Ppo.Gae(x.Rewards, x.Values, x.Mask, x.Gamma, x.Lambda);
        if (x.Whiten) adv = Masked.Whiten(adv, x.Mask);
        return new AdvantageResult(adv, returns);
    }

    // An outcome advantage per sequence, broadcast to its valid tokens.
    private static AdvantageResult GroupOutcome(Tensor perSequence, Tensor mask)
    {
        var a = GroupAdvantages.ToTokens(perSequence, mask);
        return new AdvantageResult(a, a);
    }
}
