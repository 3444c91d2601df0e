using System.Globalization;
using System.CommandLine;
using FineAlign.Data;
using FineAlign.Data.Corpus;
using FineAlign.Models;
using FineAlign.Training;
using FineAlign.Objectives;
using FineAlign.Rewards;
using FineAlign.Text;
using FineAlign.Trainers;
using TorchSharp;

namespace FineAlign.Cli.Commands;

/// <summary>The PPO options shared by <c>ppo</c> and <c>ppo-compare</c>, declared once.</summary>
internal sealed class PpoFlags
{
    public required Option<string> Policy { get; init; }
    public required Option<string?> ValueModel { get; init; }
    public required Option<bool> SharedTrunk { get; init; }
    public PeftFlags Peft { get; private init; } = null!;
    public required Option<string?> Prompts { get; init; }
    public required Option<int> CorpusSize { get; init; }
    public required Option<int> CorpusSeed { get; init; }
    public required Option<int> Seed { get; init; }
    public required Option<int> Steps { get; init; }
    public required Option<int> BatchSize { get; init; }
    public required Option<int> MiniBatchSize { get; init; }
    public required Option<int> PpoEpochs { get; init; }
    public required Option<double> LearningRate { get; init; }
    public required Option<double> KlCoef { get; init; }
    public required Option<KlEstimator> KlEstimatorOpt { get; init; }
    public required Option<double?> KlTarget { get; init; }
    public required Option<double> Gamma { get; init; }
    public required Option<double> Lam { get; init; }
    public required Option<double> ClipRange { get; init; }
    public required Option<double> ClipRangeValue { get; init; }
    public required Option<double> VfCoef { get; init; }
    public required Option<bool> Whiten { get; init; }
    public required Option<double?> MissingEosPenalty { get; init; }
    public required Option<int> MaxNewTokens { get; init; }
    public required Option<double> Temperature { get; init; }
    public required Option<double> TopP { get; init; }
    public required Option<bool> Retokenize { get; init; }
    public required Option<TlcrMapping> Mapping { get; init; }
    public required Option<int> PivotWindow { get; init; }
    public required Option<int> PivotMinLength { get; init; }
    public required Option<int> Threads { get; init; }

    public static PpoFlags Declare(RecipeCommand cmd, int defaultSteps)
    {
        static Func<int, string?> AtLeast(int min) => v => v >= min ? null : $"must be at least {min}";
        Func<double, string?> positive = v => v > 0 && double.IsFinite(v) ? null : "must be a positive number";
        return new PpoFlags
        {
            Peft = PeftFlags.Declare(cmd),
            Policy = cmd.Declare("--policy", "runs/sft/model", "Initial policy (HF folder, e.g. from finealign sft); also the reference model.", alias: "--model"),
            ValueModel = cmd.Declare<string?>("--value-model", null, "Value model folder (1-label token head). Omitted: a value head on a copy of the policy trunk."),
            SharedTrunk = cmd.Declare("--shared-trunk", false, "Put the value head on the policy's own trunk (one forward pass; value gradients reach the policy)."),
            Prompts = cmd.Declare<string?>("--prompts", null, "JSONL of prompts: a 'prompt' field per line, or a preference file (prompt + chosen + rejected, or HH-RLHF chosen + rejected transcripts with an implicit prompt) or a feedback file (prompt + completion + label), whose prompts are used. Omitted: the built-in corpus's training prompts."),
            CorpusSize = cmd.Declare("--corpus-size", 4000, "Reviews whose prompts are used when --prompts is omitted.", check: AtLeast(10)),
            CorpusSeed = cmd.Declare("--corpus-seed", 1234, "Seed of the built-in corpus."),
            Seed = cmd.Declare("--seed", 42, "Seed of sampling and mini-batch order (same seed, same run on CPU)."),
            Steps = cmd.Declare("--steps", defaultSteps, "Rollout batches to train on.", check: AtLeast(1), alias: "--max-steps"),
            BatchSize = cmd.Declare("--batch-size", 16, "Responses per rollout batch.", check: AtLeast(1)),
            MiniBatchSize = cmd.Declare("--mini-batch-size", 8, "Responses per PPO update (must divide --batch-size).", check: AtLeast(1)),
            PpoEpochs = cmd.Declare("--ppo-epochs", 4, "Passes over each rollout batch.", check: AtLeast(1)),
            LearningRate = cmd.Declare("--learning-rate", 1e-4, "AdamW learning rate (constant).", check: positive, alias: "--lr"),
            KlCoef = cmd.Declare("--kl-coef", 0.05, "β of the per-token KL penalty to the reference (initial β when --kl-target is set).", check: v => v >= 0 ? null : "must be ≥ 0"),
            KlEstimatorOpt = cmd.Declare("--kl-estimator", KlEstimator.K1, "Per-token KL estimator in the reward: k1 (log-ratio) or k3."),
            KlTarget = cmd.Declare<double?>("--kl-target", null, "Adaptive β toward this KL per sequence (Ziegler et al.); omitted = fixed β.", check: v => v is null or > 0 ? null : "must be positive"),
            Gamma = cmd.Declare("--gamma", 1.0, "Discount γ of GAE."),
            Lam = cmd.Declare("--lam", 0.95, "λ of GAE."),
            ClipRange = cmd.Declare("--cliprange", 0.2, "Policy ratio clip ε.", check: positive),
            ClipRangeValue = cmd.Declare("--cliprange-value", 0.2, "Value clip ε_v.", check: positive),
            VfCoef = cmd.Declare("--vf-coef", 0.1, "Weight of the value loss.", check: v => v >= 0 ? null : "must be ≥ 0"),
            Whiten = cmd.Declare("--whiten-advantages", true, "Whiten advantages over the valid tokens of the batch."),
            MissingEosPenalty = cmd.Declare<double?>("--missing-eos-penalty", null, "Subtract this from the score of responses cut by --max-new-tokens."),
            MaxNewTokens = cmd.Declare("--max-new-tokens", 64, "Response length limit (tokens).", check: AtLeast(1)),
            Temperature = cmd.Declare("--temperature", 1.0, "Sampling temperature of rollouts (log-probs use the same).", check: positive),
            TopP = cmd.Declare("--top-p", 1.0, "Nucleus sampling of rollouts.", check: v => v is > 0 and <= 1 ? null : "must be in (0, 1]"),
            Retokenize = cmd.Declare("--retokenize", false, "Allow a sequence reward model with another tokenizer: decode responses and re-tokenise (with a warning)."),
            Mapping = cmd.Declare("--tlcr-mapping", TlcrMapping.Paper, "TLCR probability → reward: paper (2p−1), code (tanh(p−½)) or discrete."),
            PivotWindow = cmd.Declare("--pivot-window", 1, "Smoothing window before pivot detection (pivot rewards).", check: AtLeast(1)),
            PivotMinLength = cmd.Declare("--pivot-min-length", 1, "Minimum pivot segment length.", check: AtLeast(1)),
            Threads = cmd.Declare("--threads", 0, "Torch CPU threads (0 = one per core).", check: AtLeast(0)),
        };
    }

    public PpoOptions Options(Recipe r, string outDir, bool saveRollouts, int saveSteps, bool resume) => new()
    {
        OutputDir = outDir, Seed = r.Get(Seed), Steps = r.Get(Steps), RolloutBatchSize = r.Get(BatchSize), MiniBatchSize = r.Get(MiniBatchSize),
        PpoEpochs = r.Get(PpoEpochs), LearningRate = r.Get(LearningRate), KlCoef = r.Get(KlCoef), KlEstimator = r.Get(KlEstimatorOpt),
        KlTarget = r.Get(KlTarget), Gamma = r.Get(Gamma), Lambda = r.Get(Lam), ClipRange = r.Get(ClipRange), ClipRangeValue = r.Get(ClipRangeValue),
        VfCoef = r.Get(VfCoef), WhitenAdvantages = r.Get(Whiten), MissingEosPenalty = r.Get(MissingEosPenalty), MaxNewTokens = r.Get(MaxNewTokens),
        Temperature = r.Get(Temperature), TopP = r.Get(TopP), SaveRollouts = saveRollouts, SaveSteps = saveSteps, Resume = resume,
    };

    public void ApplyThreads(Recipe r) { if (r.Get(Threads) > 0) torch.set_num_threads(r.Get(Threads)); }

    public RewardSource Reward(Recipe r, IReadOnlyList<string> specs, TextTokenizer tokenizer) =>
        RewardSpecs.Build(specs, tokenizer, r.Get(Retokenize), m => r.Error.WriteLine("warning: " + m),
            new TlcrOptions { Mapping = r.Get(Mapping) },
            new PivotOptions { SmoothingWindow = r.Get(PivotWindow), MinSegmentLength = r.Get(PivotMinLength) });

    /// <summary>(train prompts, held-out prompts): from --prompts (no held-out split) or the built-in corpus.</summary>
    public (IReadOnlyList<string> Train, IReadOnlyList<string> Eval, bool Corpus) LoadPrompts(Recipe r)
    {
        if (r.Get(Prompts) is string path)
        {
            var list = PromptReader.Read(path);
            if (list.Count == 0) throw new FineAlignException($"{path}: no prompts");
            return (list, [], false);
        }
        var (train, eval) = ReviewCorpus.Prompts(r.Get(CorpusSeed), r.Get(CorpusSize));
        return (train, eval, true);
    }

    /// <summary>Policy, frozen reference and value model, all from --policy (and --value-model).</summary>
    public (CausalLM Policy, CausalLM Reference, PpoValueModel Value, TextTokenizer Tokenizer) LoadModels(Recipe r)
    {
        string dir = r.Get(Policy);
        var tokenizer = TokenizerLoader.Load(dir);
        if (r.Get(Peft.Bf16) && r.Get(ValueModel) is null && (r.Get(SharedTrunk) || r.Get(Peft.UsePeft)))
            throw new FineAlignException("ppo --bf16 with the value head on the policy's trunk is not supported yet; give --value-model or drop --bf16.");
        var policy = Peft.Prepare(r, ModelIO.Load(dir), dir, r.Get(Seed));
        // LoRA: the reference is the base with the adapter off and the value head sits on the policy's trunk (one base in memory).
        var reference = ModelSetup.Reference(policy) ?? ModelIO.Load(dir);
        PpoValueModel value;
        if (r.Get(SharedTrunk) || (policy.Lora is not null && r.Get(ValueModel) is null)) value = PpoValueModel.Shared(policy, r.Get(Seed));
        else if (r.Get(ValueModel) is string vdir)
        {
            if (!TokenizerMatch.Same(tokenizer, TokenizerLoader.Load(vdir)))
                throw new FineAlignException($"--value-model {vdir}: its tokenizer differs from the policy's; the value model must read the policy's tokens");
            value = PpoValueModel.Separate(ScoredLM.Load(vdir));
        }
        else value = PpoValueModel.Separate(new ScoredLM(ModelIO.Load(dir), HeadKind.Token, 1, r.Get(Seed)));
        return (policy, reference, value, tokenizer);
    }
}

/// <summary><c>finealign ppo</c>: PPO with dense token-level rewards.</summary>
public static class PpoCommand
{
    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("ppo",
            "PPO (TRL conventions) with any dense reward: --reward lexicon | lexicon:token | rm:PATH | tlcr:PATH | discrete:PATH | " +
            "pivot:SPEC, each optionally @WEIGHT (several = weighted sum, each logged). Per-token KL penalty to the reference, GAE, " +
            "whitened advantages, clipped policy and value losses. Writes metrics.jsonl (TRL names), checkpoints, policy/ and value/.");
        var outDir = cmd.Declare("--out", "runs/ppo", "Output folder.", alias: "-o");
        var reward = cmd.Declare<string[]>("--reward", ["lexicon"], "Reward source spec (repeatable); see the description.");
        var saveSteps = cmd.Declare("--save-steps", 0, "Checkpoint every N rollout batches (and at the end).", check: v => v >= 0 ? null : "must be ≥ 0");
        var saveTotal = cmd.Declare<int?>("--save-total-limit", 2, "Keep at most this many checkpoints (oldest removed).", check: v => v is null or >= 1 ? null : "must be at least 1");
        var saveRollouts = cmd.Declare("--save-rollouts", false, "Write every rollout to rollouts.jsonl (prompt, response, score, KL, token rewards).");
        var resume = cmd.Declare("--resume", false, "Continue from the latest checkpoint in --out.");
        var maxPromptLength = cmd.Declare<int?>("--max-prompt-length", null,
            "Keep only the end of longer prompts: the last N tokens (BOS included), starting at a '\\n\\nHuman:' turn when one fits. Default: no cut (prompt + --max-new-tokens must fit the model's context).",
            check: v => v is null or >= 1 ? null : "must be at least 1");
        var flags = PpoFlags.Declare(cmd, defaultSteps: 50);

        cmd.SetRecipeAction((r, ct) =>
        {
            flags.ApplyThreads(r);
            var (train, _, corpus) = flags.LoadPrompts(r);
            var (policy, reference, value, tokenizer) = flags.LoadModels(r);
            using var p = policy; using var rf = reference; using var v = value;
            if (r.Get(maxPromptLength) is int maxPrompt)
            {
                var fitted = train.Select(t => PromptReader.KeepEnd(t, tokenizer, maxPrompt)).ToList();
                int cut = fitted.Where((t, i) => t.Length != train[i].Length).Count();
                if (cut > 0) r.Error.WriteLine($"warning: {cut} of {train.Count} prompts longer than --max-prompt-length {maxPrompt} tokens: kept their end");
                train = fitted;
            }
            var source = flags.Reward(r, r.Get(reward), tokenizer);
            var options = flags.Options(r, r.Get(outDir), r.Get(saveRollouts), r.Get(saveSteps), r.Get(resume)) with { SaveTotalLimit = r.Get(saveTotal) };
            r.Out.WriteLine($"ppo: policy {r.Get(flags.Policy)}, reward {string.Join(" + ", r.Get(reward))}, {train.Count} prompts, " +
                            $"{options.Steps} rollout batches of {options.RolloutBatchSize}, output {options.OutputDir}");
            var result = CliProgress.Run(r.Out, progress =>
            {
                using var trainer = new PpoTrainer(policy, reference, value, tokenizer, source, train, options)
                {
                    Progress = progress,
                    TrueReward = corpus ? (_, resp) => Lexicon.TrueReward(resp) : null,
                };
                return trainer.Train(ct);
            });
            if (!result.Completed)
            {
                r.Out.WriteLine($"ppo: stopped at rollout batch {result.Steps}; checkpoint {result.LastCheckpoint}. Continue with --resume.");
                return 130;
            }
            var last = result.LogHistory[^1];
            var inv = CultureInfo.InvariantCulture;
            string trueText = last.TryGetValue("env/true_reward", out var tr) ? string.Create(inv, $", env/true_reward {tr:F4}") : "";
            r.Out.WriteLine(string.Create(inv, $"ppo: {result.Steps} rollout batches; last objective/scores {last["objective/scores"]:F4}, objective/kl {last["objective/kl"]:F4}") + trueText);
            r.Out.WriteLine($"ppo: policy saved to {Path.Combine(options.OutputDir, PpoTrainer.PolicyFolder)}, value model to {Path.Combine(options.OutputDir, PpoTrainer.ValueFolder)}");
            return 0;
        });
        return cmd;
    }
}
