using FineAlign.Objectives;

namespace FineAlign.Trainers;

/// <summary>
/// Settings of the online-RL engine (<see cref="OnlineRlTrainer"/>). Names and defaults follow TRL's PPOConfig and
/// GRPOConfig/RLOOConfig; <see cref="Ppo"/>, <see cref="Grpo"/> and <see cref="Rloo"/> are the presets the CLI commands start from.
/// </summary>
public sealed record OnlineRlOptions
{
    /// <summary>The preset's name: progress, log lines and the checkpoint's owner.</summary>
    public string Name { get; init; } = "grpo";
    public string OutputDir { get; init; } = "runs/grpo";
    public int Seed { get; init; } = 42;
    /// <summary>Rollout batches (each: sample, score, then <see cref="Epochs"/> passes of mini-batch updates).</summary>
    public int Steps { get; init; } = 50;
    /// <summary>Responses per rollout batch (= prompts × <see cref="NumGenerations"/>).</summary>
    public int BatchSize { get; init; } = 16;
    /// <summary>G: responses sampled per prompt (TRL num_generations); 1 for PPO.</summary>
    public int NumGenerations { get; init; } = 4;
    /// <summary>Responses per optimizer step; must divide <see cref="BatchSize"/>. 0 = the whole batch.</summary>
    public int MiniBatchSize { get; init; }
    /// <summary>Passes over each rollout batch (TRL num_ppo_epochs / num_iterations μ).</summary>
    public int Epochs { get; init; } = 1;
    public double LearningRate { get; init; } = 1e-6;
    public double MaxGradNorm { get; init; } = 1.0;
    /// <summary>A registered estimator (<see cref="AdvantageEstimators"/>): gae, grpo, dr_grpo, rloo, reinforce++.</summary>
    public string Advantage { get; init; } = AdvantageEstimators.Grpo;
    /// <summary>A registered policy loss (<see cref="PolicyLosses"/>): grpo, token, dr_grpo.</summary>
    public string PolicyLoss { get; init; } = PolicyLosses.Grpo;
    public double Gamma { get; init; } = 1.0;
    public double Lambda { get; init; } = 0.95;
    /// <summary>ε of the per-token clipped ratio (PPO cliprange, GRPO epsilon).</summary>
    public double ClipRange { get; init; } = 0.2;
    public double ClipRangeValue { get; init; } = 0.2;
    public double VfCoef { get; init; } = 0.1;
    /// <summary>β of the per-token KL penalty folded into the reward (initial β when <see cref="KlTarget"/> is set).</summary>
    public double KlCoef { get; init; }
    public KlEstimator KlEstimator { get; init; } = KlEstimator.K1;
    /// <summary>Adaptive β (Ziegler et al.) toward this KL per sequence; null = fixed β.</summary>
    public double? KlTarget { get; init; }
    public double KlHorizon { get; init; } = 10000;
    /// <summary>β of the k3 KL(π_θ ‖ π_ref) term in the loss (TRL GRPO beta).</summary>
    public double Beta { get; init; }
    /// <summary>GAE: whiten advantages over the batch's valid tokens.</summary>
    public bool WhitenAdvantages { get; init; } = true;
    /// <summary>GRPO's scale_rewards.</summary>
    public RewardScaling ScaleRewards { get; init; } = RewardScaling.Group;
    /// <summary>Subtracted from the score of responses cut by the length limit (TRL missing_eos_penalty); null = none.</summary>
    public double? MissingEosPenalty { get; init; }
    public int MaxNewTokens { get; init; } = 64;
    /// <summary>Token ids that also end a response besides the model's EOS (a chat template's end-of-turn token).</summary>
    public IReadOnlyList<int>? StopTokenIds { get; init; }
    public double Temperature { get; init; } = 1.0;
    public double TopP { get; init; } = 1.0;
    public int LoggingSteps { get; init; } = 1;
    /// <summary>Checkpoint every N rollout batches (and at the end); 0 = only at the end.</summary>
    public int SaveSteps { get; init; }
    public int? SaveTotalLimit { get; init; } = 2;
    /// <summary>Write every rollout (prompt, response, score, reward, advantage, KL, token rewards) to rollouts.jsonl.</summary>
    public bool SaveRollouts { get; init; }
    public bool Resume { get; init; }

    /// <summary>PPO (TRL PPOConfig defaults): GAE with a value model, four epochs of mini-batches of 8, β = 0.05.</summary>
    public static OnlineRlOptions Ppo { get; } = new()
    {
        Name = "ppo", OutputDir = "runs/ppo", NumGenerations = 1, MiniBatchSize = 8, Epochs = 4, LearningRate = 3e-6,
        Advantage = AdvantageEstimators.Gae, PolicyLoss = PolicyLosses.Token, KlCoef = 0.05,
    };

    /// <summary>GRPO (TRL GRPOConfig defaults): group-normalised advantages, no value model, β = 0.</summary>
    public static OnlineRlOptions Grpo { get; } = new();

    /// <summary>RLOO (TRL RLOOConfig defaults): leave-one-out baseline, KL folded into the reward with β = 0.05.</summary>
    public static OnlineRlOptions Rloo { get; } = new() { Name = "rloo", OutputDir = "runs/rloo", Advantage = AdvantageEstimators.Rloo, KlCoef = 0.05 };

    /// <summary>The preset a command name starts from (ppo, grpo, rloo).</summary>
    public static OnlineRlOptions Preset(string name) => name switch
    {
        "ppo" => Ppo, "grpo" => Grpo, "rloo" => Rloo,
        _ => throw new FineAlignException($"unknown online-RL preset '{name}' (ppo, grpo, rloo)"),
    };

    public int EffectiveMiniBatch => MiniBatchSize <= 0 ? BatchSize : MiniBatchSize;
    public AdvantageEstimatorInfo Estimator => AdvantageEstimators.Get(Advantage);
    /// <summary>True when the estimator needs a value model (GAE): metrics then use TRL's PPO names, otherwise GRPO's.</summary>
    public bool UsesCritic => Estimator.NeedsValues;
    /// <summary>What a step is called in messages: PPO's "rollout batch", the group methods' "generation batch".</summary>
    public string StepNoun => UsesCritic ? "rollout batch" : "generation batch";

    public void Validate()
    {
        if (Steps < 1) throw new FineAlignException($"steps must be at least 1 (got {Steps})");
        var estimator = AdvantageEstimators.Find(Advantage)
            ?? throw new FineAlignException($"unknown advantage estimator '{Advantage}' (one of {string.Join(", ", AdvantageEstimators.Names)})");
        if (PolicyLosses.Find(PolicyLoss) is null)
            throw new FineAlignException($"unknown policy loss '{PolicyLoss}' (one of {string.Join(", ", PolicyLosses.Names)})");
        if (NumGenerations < 1) throw new FineAlignException($"--num-generations must be at least 1 (got {NumGenerations})");
        if (!estimator.NeedsValues && NumGenerations < 2) // critic-free: the baseline (and the group metrics) need groups
            throw new FineAlignException($"--num-generations must be at least 2 (got {NumGenerations}): a group baseline needs several samples per prompt");
        if (BatchSize < 1 || BatchSize % NumGenerations != 0)
            throw new FineAlignException($"batch size {BatchSize} must be a positive multiple of --num-generations {NumGenerations}");
        if (BatchSize % EffectiveMiniBatch != 0)
            throw new FineAlignException($"rollout batch size {BatchSize} must be a multiple of the mini-batch size {EffectiveMiniBatch}");
        if (Epochs < 1) throw new FineAlignException($"epochs (--ppo-epochs / --num-iterations) must be at least 1 (got {Epochs})");
        if (!(LearningRate > 0)) throw new FineAlignException($"learning rate must be positive (got {LearningRate})");
        if (!(Temperature > 0)) throw new FineAlignException($"{Name} samples at a temperature > 0 (got {Temperature})");
        if (MaxNewTokens < 1) throw new FineAlignException($"max new tokens must be at least 1 (got {MaxNewTokens})");
        if (!(ClipRange > 0)) throw new FineAlignException($"the clip range ε must be positive (got {ClipRange})");
        if (Beta < 0 || KlCoef < 0) throw new FineAlignException($"KL coefficients must be ≥ 0 (beta {Beta}, kl coef {KlCoef})");
        if (LoggingSteps < 1) throw new FineAlignException($"logging steps must be at least 1 (got {LoggingSteps})");
    }
}
