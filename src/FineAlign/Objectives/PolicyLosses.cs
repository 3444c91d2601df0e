using static TorchSharp.torch;

namespace FineAlign.Objectives;

/// <summary>What every policy loss reads: per-token tensors [B, T] over response tokens (mask 1 on valid tokens).</summary>
public sealed record PolicyLossInput
{
    public required Tensor LogProbs { get; init; }
    public required Tensor OldLogProbs { get; init; }
    public required Tensor Advantages { get; init; }
    public required Tensor Mask { get; init; }
    /// <summary>ε of the clipped ratio.</summary>
    public double Clip { get; init; } = 0.2;
    /// <summary>Reference log-probs for a k3 KL(π_θ ‖ π_ref) loss term (GRPO's β); null = none.</summary>
    public Tensor? RefLogProbs { get; init; }
    public double KlBeta { get; init; }
    /// <summary>Dr. GRPO's constant denominator (the maximum completion length).</summary>
    public long? MaxLength { get; init; }
}

/// <summary>The one signature of a policy loss: a scalar to minimise.</summary>
public delegate Tensor PolicyLossFunction(PolicyLossInput input);

/// <summary>
/// Policy losses chosen by name (verl's core_algos.py registry): the PPO clipped surrogate per token
/// (<see cref="Ppo.ClippedSurrogate"/>) plus the optional k3 term, reduced three ways. PPO's loss is "token"
/// (the masked mean over all valid tokens of the mini-batch).
/// </summary>
public static class PolicyLosses
{
    public const string Grpo = "grpo", Token = "token", DrGrpo = "dr_grpo";

    private static readonly Dictionary<string, PolicyLossFunction> Registry = new(StringComparer.Ordinal)
    {
        [Grpo] = x => Clipped(x, LossAggregation.Grpo),
        [Token] = x => Clipped(x, LossAggregation.Token),
        [DrGrpo] = x => Clipped(x, LossAggregation.DrGrpo),
    };

    public static void Register(string name, PolicyLossFunction loss) => Registry[name] = loss;

    public static IReadOnlyCollection<string> Names => Registry.Keys;

    public static PolicyLossFunction Get(string name) =>
        Find(name) ?? throw new FineAlignException($"unknown policy loss '{name}' (one of {string.Join(", ", Registry.Keys)})");

    public static PolicyLossFunction? Find(string name) => Registry.GetValueOrDefault(Canonical(name));

    /// <summary>The registered spelling ("dapo" and "ppo" are the token mean, "dr-grpo" is dr_grpo).</summary>
    public static string Canonical(string name) => name.Trim().ToLowerInvariant().Replace("-", "_") switch
    {
        "dapo" or "ppo" => Token,
        "drgrpo" => DrGrpo,
        var n => n,
    };

    private static Tensor Clipped(PolicyLossInput x, LossAggregation mode) =>
        GroupAdvantages.PolicyLoss(x.LogProbs, x.OldLogProbs, x.Advantages, x.Mask, mode, x.Clip, x.RefLogProbs, x.KlBeta, x.MaxLength);
}
