using System.CommandLine;
using FineAlign.Data;
using FineAlign.Data.Corpus;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Rewards;
using FineAlign.Text;
using FineAlign.Trainers;

namespace FineAlign.Cli.Commands;

/// <summary>
/// The one option set of the online-RL engine, shared by <c>ppo</c>, <c>grpo</c>, <c>rloo</c> and <c>ppo-compare</c>:
/// each command only changes the defaults (its <see cref="OnlineRlOptions"/> preset).
/// </summary>
internal sealed class OnlineRlFlags
{
    public required OnlineRlOptions Preset { get; init; }
    public required Option<string> Policy { get; init; }
    public required Option<string?> ValueModel { get; init; }
    public required Option<bool> SharedTrunk { get; init; }
    /// <summary>LoRA, bf16, gradient checkpointing, device (the flag group every trainer shares).</summary>
    public PeftFlags Peft { get; private init; } = null!;
    public required Option<string?> Prompts { get; init; }
    public required Option<string?> ChatTemplate { get; init; }
    private ChatTemplate? _chat;   // set by LoadPrompts when a prompt was a conversation
    /// <summary>The chat template conversational prompts were rendered with (null for text prompts).</summary>
    public ChatTemplate? Chat => _chat;
    public required Option<int?> MaxPromptLength { get; init; }
    public required CorpusFlags Corpus { get; init; }
    public required Option<int> Seed { get; init; }
    public required RuntimeFlags Runtime { get; init; }
    public required Option<int> Steps { get; init; }
    public required Option<int> BatchSize { get; init; }
    public required Option<int> NumGenerations { get; init; }
    public required Option<int> MiniBatchSize { get; init; }
    public required Option<int> Epochs { get; init; }
    public required Option<double> LearningRate { get; init; }
    public required Option<double> MaxGradNorm { get; init; }
    public required Option<string> Advantage { get; init; }
    public required Option<string> LossType { get; init; }
    public required Option<double> KlCoef { get; init; }
    public required Option<KlEstimator> KlEstimatorOpt { get; init; }
    public required Option<double?> KlTarget { get; init; }
    public required Option<double> Beta { get; init; }
    public required Option<double> Gamma { get; init; }
    public required Option<double> Lam { get; init; }
    public required Option<double> ClipRange { get; init; }
    public required Option<double> ClipRangeValue { get; init; }
    public required Option<double> VfCoef { get; init; }
    public required Option<bool> Whiten { get; init; }
    public required Option<RewardScaling> ScaleRewards { get; init; }
    public required Option<double?> MissingEosPenalty { get; init; }
    public required SamplingFlags Sampling { get; init; }
    public required RewardFlags Reward { get; init; }
    public required Option<bool> SaveRollouts { get; init; }
    public required RolloutFlags Rollout { get; init; }
    public required OutputFlags Output { get; init; }

    public Option<int> MaxNewTokens => Sampling.MaxNewTokens;
    private IReadOnlyList<PromptRow>? _rows;   // set by LoadPrompts from --prompts

    public static OnlineRlFlags Declare(RecipeCommand cmd, OnlineRlOptions preset, int? defaultSteps = null, string? defaultOut = null)
    {
        var p = preset;
        return new OnlineRlFlags
        {
            Peft = PeftFlags.Declare(cmd),
            Preset = p,
            Output = OutputFlags.Declare(cmd, defaultOut ?? p.OutputDir, "rollout batches"),
            Policy = cmd.Declare("--policy", "runs/sft/model", "Initial policy (HF folder, e.g. from finealign sft); also the reference model.", alias: "--model"),
            ValueModel = cmd.Declare<string?>("--value-model", null, "GAE only: value model folder (1-label token head). Omitted: a value head on a copy of the policy trunk."),
            SharedTrunk = cmd.Declare("--shared-trunk", false, "GAE only: put the value head on the policy's own trunk (one forward pass; value gradients reach the policy)."),
            Reward = RewardFlags.Declare(cmd),
            Prompts = cmd.Declare<string?>("--prompts", null, "JSONL of prompts: a 'prompt' field per line, or a preference file (prompt + chosen + rejected, or HH-RLHF chosen + rejected transcripts with an implicit prompt) or a feedback file (prompt + completion + label), whose prompts are used. Omitted: the built-in corpus's training prompts."),
            ChatTemplate = cmd.Declare<string?>("--chat-template", null, "For conversational prompts (message lists): " + GenerateCommand.ChatTemplateHelp + " Rollouts then also stop at its end-of-turn token."),
            MaxPromptLength = cmd.Declare<int?>("--max-prompt-length", null,
                "Keep only the end of longer prompts: the last N tokens (BOS included), starting at a '\\n\\nHuman:' turn when one fits. Default: no cut (prompt + --max-new-tokens must fit the model's context).",
                check: v => v is null or >= 1 ? null : "must be at least 1"),
            Corpus = CorpusFlags.Declare(cmd, "Reviews whose prompts are used when --prompts is omitted."),
            Seed = cmd.Declare("--seed", p.Seed, "Seed of sampling and mini-batch order (same seed, same run on CPU)."),
            Runtime = RuntimeFlags.Declare(cmd),
            Steps = cmd.Declare("--steps", defaultSteps ?? p.Steps, "Rollout batches to train on.", check: Checks.AtLeast(1), alias: "--max-steps"),
            BatchSize = cmd.Declare("--batch-size", p.BatchSize, "Responses per rollout batch (a multiple of --num-generations).", check: Checks.AtLeast(1)),
            NumGenerations = cmd.Declare("--num-generations", p.NumGenerations, "G: responses sampled per prompt (at least 2 for the critic-free estimators).", check: Checks.AtLeast(1)),
            MiniBatchSize = cmd.Declare("--mini-batch-size", p.MiniBatchSize, "Responses per optimizer step (divides --batch-size; 0 = the whole batch).", check: Checks.AtLeast(0)),
            Epochs = cmd.Declare("--num-iterations", p.Epochs, "Update passes over each rollout batch (TRL num_iterations μ; PPO's num_ppo_epochs).", check: Checks.AtLeast(1), alias: "--ppo-epochs"),
            LearningRate = cmd.Declare("--learning-rate", 1e-4, "AdamW learning rate (constant).", check: Checks.Positive, alias: "--lr"),
            MaxGradNorm = cmd.Declare("--max-grad-norm", p.MaxGradNorm, "Gradient-norm clipping (0 = none).", check: Checks.NonNegative),
            Advantage = cmd.Declare("--advantage", p.Advantage, $"Advantage estimator: {string.Join(", ", AdvantageEstimators.Names)} (gae uses a value model).",
                check: v => AdvantageEstimators.Find(v) is null ? $"must be one of {string.Join(", ", AdvantageEstimators.Names)}" : null),
            LossType = cmd.Declare("--loss-type", p.PolicyLoss, "Policy-loss aggregation: grpo (mean of per-sequence token means), token (sum / active tokens; PPO's), dr_grpo (sum / (batch × --max-new-tokens)).",
                check: v => PolicyLosses.Find(v) is null ? "must be grpo, token or dr_grpo" : null),
            KlCoef = cmd.Declare("--kl-coef", p.KlCoef, "β of the per-token KL penalty to the reference folded into the reward (initial β when --kl-target is set).", check: Checks.NonNegative),
            KlEstimatorOpt = cmd.Declare("--kl-estimator", p.KlEstimator, "Per-token KL estimator in the reward: k1 (log-ratio) or k3."),
            KlTarget = cmd.Declare<double?>("--kl-target", null, "Adaptive β toward this KL per sequence (Ziegler et al.); omitted = fixed β.", check: v => v is null or > 0 ? null : "must be positive"),
            Beta = cmd.Declare("--beta", p.Beta, "β of the k3 KL(π ‖ π_ref) loss term (TRL GRPO beta).", check: Checks.NonNegative),
            Gamma = cmd.Declare("--gamma", p.Gamma, "Discount γ (GAE, REINFORCE++)."),
            Lam = cmd.Declare("--lam", p.Lambda, "λ of GAE."),
            ClipRange = cmd.Declare("--epsilon", p.ClipRange, "ε of the per-token clipped ratio (PPO's cliprange).", check: Checks.Positive, alias: "--cliprange"),
            ClipRangeValue = cmd.Declare("--cliprange-value", p.ClipRangeValue, "GAE only: value clip ε_v.", check: Checks.Positive),
            VfCoef = cmd.Declare("--vf-coef", p.VfCoef, "GAE only: weight of the value loss.", check: Checks.NonNegative),
            Whiten = cmd.Declare("--whiten-advantages", p.WhitenAdvantages, "GAE only: whiten advantages over the valid tokens of the batch."),
            ScaleRewards = cmd.Declare("--scale-rewards", p.ScaleRewards, "GRPO only: divide centred rewards by the group std, the batch std, or none."),
            MissingEosPenalty = cmd.Declare<double?>("--missing-eos-penalty", null, "Subtract this from the score of responses cut by --max-new-tokens."),
            Sampling = SamplingFlags.Declare(cmd),
            Rollout = RolloutFlags.Declare(cmd),
            SaveRollouts = cmd.Declare("--save-rollouts", false, "Write every rollout to rollouts.jsonl (prompt, response, score, reward, advantage, KL, token rewards)."),
        };
    }

    /// <summary>The engine's settings from the recipe (the preset's values where the CLI has no flag).</summary>
    public OnlineRlOptions Options(Recipe r) => Preset with
    {
        OutputDir = r.Get(Output.Out), Seed = r.Get(Seed), Steps = r.Get(Steps), BatchSize = r.Get(BatchSize), NumGenerations = r.Get(NumGenerations),
        MiniBatchSize = r.Get(MiniBatchSize), Epochs = r.Get(Epochs), LearningRate = r.Get(LearningRate), MaxGradNorm = r.Get(MaxGradNorm),
        Advantage = AdvantageEstimators.Canonical(r.Get(Advantage)), PolicyLoss = PolicyLosses.Canonical(r.Get(LossType)),
        KlCoef = r.Get(KlCoef), KlEstimator = r.Get(KlEstimatorOpt), KlTarget = r.Get(KlTarget), Beta = r.Get(Beta), Gamma = r.Get(Gamma),
        Lambda = r.Get(Lam), ClipRange = r.Get(ClipRange), ClipRangeValue = r.Get(ClipRangeValue), VfCoef = r.Get(VfCoef),
        WhitenAdvantages = r.Get(Whiten), ScaleRewards = r.Get(ScaleRewards), MissingEosPenalty = r.Get(MissingEosPenalty),
        MaxNewTokens = r.Get(Sampling.MaxNewTokens), Temperature = r.Get(Sampling.Temperature), TopP = r.Get(Sampling.TopP),
        SaveSteps = r.Get(Output.SaveSteps), SaveTotalLimit = r.Get(Output.SaveTotalLimit), SaveRollouts = r.Get(SaveRollouts),
        Resume = r.Get(Output.Resume),
    };

    /// <summary>After <see cref="LoadPrompts"/>: conversational prompts also stop rollouts at the template's end-of-turn token.</summary>
    public OnlineRlOptions WithChatStop(OnlineRlOptions o) => _chat?.EndOfTurn.Id is int eot ? o with { StopTokenIds = [eot] } : o;

    public void ApplyThreads(Recipe r) => Runtime.Apply(r);

    /// <summary>(train prompts, held-out prompts, from the built-in corpus?): --prompts (no held-out split) or the corpus.</summary>
    public (IReadOnlyList<string> Train, IReadOnlyList<string> Eval, bool Corpus) LoadPrompts(Recipe r)
    {
        if (r.Get(Prompts) is string path)
        {
            string dir = r.Get(Policy);
            var (rows, anyChat) = PromptReader.ReadRows(path, () => _chat = ChatTemplates.Resolve(r.Get(ChatTemplate), TokenizerLoader.Load(dir), dir));
            if (!anyChat) _chat = null;
            if (rows.Count == 0) throw new FineAlignException($"{path}: no prompts");
            _rows = rows;
            return (rows.Select(x => x.Prompt).ToList(), [], false);
        }
        var (train, eval) = ReviewCorpus.Prompts(r.Get(Corpus.Seed), r.Get(Corpus.Size));
        return (train, eval, true);
    }

    /// <summary>
    /// After <see cref="LoadPrompts"/>: the prompt rows' dataset columns for the trainer (null for the built-in corpus), checked
    /// against the columns <paramref name="reward"/> reads — a row without one is a one-line error naming file, line and field.
    /// </summary>
    public IReadOnlyList<IReadOnlyDictionary<string, string>>? PromptColumns(Recipe r, RewardSource reward) =>
        CheckColumns(r.Get(Prompts), _rows, reward, r.Get(Reward.Specs));

    internal static IReadOnlyList<IReadOnlyDictionary<string, string>>? CheckColumns(string? path, IReadOnlyList<PromptRow>? rows, RewardSource reward, IReadOnlyList<string> specs)
    {
        if (path is null || rows is null)
        {
            if (reward.Columns.Count > 0)
                throw new FineAlignException($"--reward {string.Join(" ", specs)} reads the dataset column(s) {string.Join(", ", reward.Columns.Select(c => $"'{c}'"))}: give --prompts FILE whose rows have them");
            return null;
        }
        PromptReader.RequireColumns(path, rows, reward.Columns, c => $"--reward {specs.FirstOrDefault(s => s.EndsWith(":" + c, StringComparison.Ordinal) || s.Contains(":" + c + "@", StringComparison.Ordinal)) ?? string.Join(" ", specs)}",
            reward.ColumnProblem);
        return rows.Select(x => x.Columns).ToList();
    }

    /// <summary>--max-prompt-length applied (with a warning naming how many prompts were cut).</summary>
    public IReadOnlyList<string> FitPrompts(Recipe r, IReadOnlyList<string> prompts, TextTokenizer tokenizer)
    {
        if (r.Get(MaxPromptLength) is not int maxPrompt) return prompts;
        var fitted = prompts.Select(t => PromptReader.KeepEnd(t, tokenizer, maxPrompt)).ToList();
        int cut = fitted.Where((t, i) => t.Length != prompts[i].Length).Count();
        if (cut > 0) r.Error.WriteLine($"warning: {cut} of {prompts.Count} prompts longer than --max-prompt-length {maxPrompt} tokens: kept their end");
        return fitted;
    }

    /// <summary>Policy, frozen reference and (for GAE) the value model, from --policy (and --value-model).</summary>
    public (CausalLM Policy, CausalLM Reference, ValueModel? Value, TextTokenizer Tokenizer) LoadModels(Recipe r, OnlineRlOptions options)
    {
        string dir = ModelLocator.Resolve(r.Get(Policy));  // folder, checkpoint or hub-cache org/name
        var tokenizer = TokenizerLoader.Load(dir);
        var policy = Peft.Prepare(r, ModelIO.Load(dir, Peft.LoadDtype(r)), dir, r.Get(Seed));
        // LoRA: the reference is the base with the adapter off, and the value head sits on the policy's trunk (one base in memory).
        var reference = Training.ModelSetup.Reference(policy) ?? ModelIO.Load(dir);
        ValueModel? value = null;
        if (!options.UsesCritic) return (policy, reference, value, tokenizer);
        if (r.Get(SharedTrunk) || (policy.Lora is not null && r.Get(ValueModel) is null)) value = Models.ValueModel.Shared(policy, r.Get(Seed));
        else if (r.Get(ValueModel) is string vdir)
        {
            if (!TokenizerMatch.Same(tokenizer, TokenizerLoader.Load(vdir)))
                throw new FineAlignException($"--value-model {vdir}: its tokenizer differs from the policy's; the value model must read the policy's tokens");
            value = Models.ValueModel.Separate(ScoredLM.Load(vdir));
        }
        else value = Models.ValueModel.Separate(new ScoredLM(ModelIO.Load(dir), HeadKind.Token, 1, r.Get(Seed)));
        return (policy, reference, value, tokenizer);
    }
}
