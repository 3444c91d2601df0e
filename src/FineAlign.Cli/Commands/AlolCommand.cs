using System.Globalization;
using FineAlign.Data;
using FineAlign.Data.Corpus;
using FineAlign.Evaluation;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Rewards;
using FineAlign.Trainers;

namespace FineAlign.Cli.Commands;

/// <summary><c>finealign alol</c>: Advantage-Leftover-Lunch offline RL on (prompt, response, reward) data.</summary>
public static class AlolCommand
{
    /// <summary>--variant names → objective (the A-LoL variants and the paper's reward-weighted baselines).</summary>
    public static readonly IReadOnlyDictionary<string, AlolVariant> Variants = new Dictionary<string, AlolVariant>
    {
        ["alol"] = AlolVariant.Alol, ["alol-ref-free"] = AlolVariant.AlolRefFree, ["alol-seq"] = AlolVariant.AlolSeq,
        ["alol-kl"] = AlolVariant.AlolKl, ["rlol"] = AlolVariant.RLol, ["weighted-bc"] = AlolVariant.WeightedBc, ["rgold"] = AlolVariant.RGold,
    };

    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("alol",
            "A-LoL (Baheti et al. 2024): offline policy gradient on a fixed set of (prompt, completion|response, reward). A value head on the " +
            "frozen reference estimates V(x) (--value-estimator), A = R − V(x), examples with A ≤ 0 are dropped (reported), and the policy is trained with the " +
            "chosen --variant. Without --data: built-in corpus reviews rewarded with their true sentiment (--noise-fraction mislabels negatives).");
        var flags = TrainingFlags.Declare(cmd, defaultOut: "runs/alol", defaultLr: 1e-4, defaultMaxSteps: 200);
        var data = cmd.Declare<string?>("--data", null, "Offline JSONL: prompt + completion (or response) + reward. Omitted: the built-in corpus.");
        var variant = cmd.Declare("--variant", "alol", "alol (clipped sequence weight π/π_ref), alol-ref-free (no weight), alol-seq (per-token weights), " +
            "alol-kl (KL-penalised); baselines: rlol, weighted-bc, rgold.", check: v => Variants.ContainsKey(v) ? null : "must be one of " + string.Join(", ", Variants.Keys));
        var epsilon = cmd.Declare("--clip-epsilon", 0.9, "Importance weights are clipped to [1−ε, 1+ε] (reference code: 0.9).", check: v => v is >= 0 and <= 1 ? null : "must be in [0, 1]");
        var klBeta = cmd.Declare("--kl-beta", 0.1, "β of the KL term of alol-kl.", check: v => v >= 0 && double.IsFinite(v) ? null : "must be ≥ 0");
        var retokenize = RewardFlags.DeclareRetokenize(cmd);
        var priority = cmd.Declare("--priority-sampling", false, "Sample training examples with probability ∝ advantage (with replacement).");
        var valueSteps = cmd.Declare("--value-steps", 300, "Full-batch steps fitting the value head before policy training.", check: v => v >= 0 ? null : "must be ≥ 0");
        var valueLr = cmd.Declare("--value-lr", 1e-2, "Learning rate of the value head.", check: v => v > 0 ? null : "must be positive");
        var reward = cmd.Declare<string[]>("--reward", [], "Score responses with a reward source instead of the data's 'reward' (lexicon, lexicon:token, rm:PATH, tlcr:PATH, ...; " +
            "token-level sources contribute Σ_t r_t).");
        var refModel = cmd.Declare<string?>("--ref-model", null, "Reference model folder (default: a frozen copy of --model).");
        var maxLength = cmd.Declare<int?>("--max-length", null, "Maximum prompt + completion tokens (default: the model's context).", check: v => v is null or >= 2 ? null : "must be at least 2");
        var corpus = CorpusFlags.Declare(cmd, "Reviews generated for the built-in offline set.", 4000, 10);
        var corpusSize = corpus.Size;
        var corpusSeed = corpus.Seed;
        var noise = cmd.Declare("--noise-fraction", 0.0, "Built-in set: share of negative responses relabelled with --noise-reward (robustness test).",
            check: v => v is >= 0 and <= 1 ? null : "must be in [0, 1]");
        var noiseReward = cmd.Declare("--noise-reward", 1.0, "The (wrong) reward given to mislabelled responses.", check: v => double.IsFinite(v) ? null : "must be finite");
        var evalPrompts = cmd.Declare("--eval-prompts", 64, "Built-in corpus: held-out prompts for the true-reward evaluation of the initial and trained policy (0 = skip).",
            check: v => v >= 0 ? null : "must be ≥ 0");
        var evalSamples = cmd.Declare("--eval-samples", 4, "Samples per held-out prompt in that evaluation (the corpus has few distinct held-out openings).",
            check: v => v >= 1 ? null : "must be at least 1");
        var maxNew = cmd.Declare("--max-new-tokens", 64, "Response length of the evaluation and of the reference's responses for the paper's value estimate.", check: v => v >= 1 ? null : "must be at least 1");
        var estimator = cmd.Declare("--value-estimator", "paper", "V_ref(x): paper (attention + MLP head trained on the reward of the reference's own greedy responses " +
            "to --value-prompts validation prompts; needs a reward function: --reward, or the built-in corpus's) or linear (a linear head fitted to the data's rewards). " +
            "By default paper falls back to linear, with a note, when there is no reward function.", check: v => v is "paper" or "linear" ? null : "must be paper or linear");
        var valuePrompts = cmd.Declare("--value-prompts", 128, "Paper estimator: distinct prompts of the validation split.", check: v => v >= 2 ? null : "must be at least 2");
        var valueEpochs = cmd.Declare("--value-epochs", 10, "Paper estimator: epochs of the head (the best by MSE is kept; reference code: 10).", check: v => v >= 1 ? null : "must be at least 1");

        cmd.SetRecipeAction((r, ct) =>
        {
            flags.ApplyThreads(r);
            var options = flags.Build(r);
            var (policy, tokenizer, description) = PreferenceFlags.RequirePolicy(r, flags, "alol");
            using var _ = policy;
            int context = policy.Config.MaxPositionEmbeddings;
            int maxLen = r.Get(maxLength) ?? context;
            if (maxLen > context) throw new FineAlignException($"--max-length {maxLen} exceeds the model's context of {context} tokens.");
            var enc = new PreferenceEncoding { MaxLength = maxLen, TemplateFolder = flags.TemplateFolder(r) };
            Action<string> warn = m => r.Error.WriteLine("warning: " + m);
            var specs = r.Get(reward);
            OfflineDataset train;
            if (r.Get(data) is string path)
            {
                train = OfflineDataset.Load(path, tokenizer, enc, rewardOptional: specs.Length > 0, warn);
                r.Out.WriteLine($"alol: {train.Examples.Count} examples from {path}");
            }
            else
            {
                var built = BuiltinData.OfflineExamples(r.Get(corpusSeed), r.Get(corpusSize), r.Get(noise), r.Get(noiseReward));
                train = OfflineDataset.FromExamples(built.Train, BuiltinData.Name, tokenizer, enc, warn);
                r.Out.WriteLine($"alol: {train.Examples.Count} built-in examples (true sentiment reward); {built.Mislabelled} of {built.Negative} negative responses " +
                                $"relabelled with reward {r.Get(noiseReward)}");
            }
            ResponseScorer? scorer = r.Get(data) is null ? (_, responses) => responses.Select(x => (double)Lexicon.TrueReward(x.Text)).ToArray() : null;
            if (specs.Length > 0)
            {
                var source = RewardSpecs.Build(specs, tokenizer, r.Get(retokenize), warn);
                train = AlolTrainer.Rescore(train, source, tokenizer);
                scorer = AlolPaperValue.FromRewardSource(source, tokenizer);
                r.Out.WriteLine($"alol: rewards from {string.Join(" + ", specs)}");
            }
            var valueEstimator = r.Get(estimator) == "linear" ? AlolValueEstimator.Linear : AlolValueEstimator.Paper;
            if (valueEstimator == AlolValueEstimator.Paper && scorer is null)
            {
                if (r.SourceOf(estimator) != ValueSource.Default)
                    throw new FineAlignException("--value-estimator paper: the reference's own responses need a reward: pass --reward SPEC, or use --value-estimator linear.");
                r.Out.WriteLine("alol: no reward function for the reference's own responses (--reward), so V(x) is the linear head fitted to the data's rewards (--value-estimator linear)");
                valueEstimator = AlolValueEstimator.Linear;
            }
            var alol = new AlolTrainerOptions
            {
                Variant = Variants[r.Get(variant)], PrioritySampling = r.Get(priority), ValueSteps = r.Get(valueSteps), ValueLearningRate = r.Get(valueLr),
                ValueEstimator = valueEstimator, ReferenceResponseScorer = scorer,
                PaperValue = new AlolPaperValueOptions { ValidationPrompts = r.Get(valuePrompts), Epochs = r.Get(valueEpochs), MaxNewTokens = r.Get(maxNew) },
                Objective = new AlolOptions { Epsilon = r.Get(epsilon), KlBeta = r.Get(klBeta) },
            };
            var reference = PreferenceFlags.LoadReference(r.Get(refModel), policy);
            string modelDir = ModelFolder.Resolve(r.Get(flags.Model)!);
            r.Out.WriteLine($"alol: {description}; variant {r.Get(variant)}{(alol.PrioritySampling ? ", priority sampling" : "")}; output {options.OutputDir}");
            var (result, report) = CliProgress.Run(r.Out, progress =>
                AlolTrainer.Train(policy, reference, tokenizer, train, options, alol, m => r.Out.WriteLine("alol: " + m), progress, ct));
            r.Out.WriteLine(report.UsesAdvantage
                ? $"alol: advantages: kept {report.Kept}, dropped {report.Dropped} (A ≤ 0) of {report.Examples}; mean A⁺ {F(report.MeanPositiveAdvantage)}"
                : $"alol: {report.Examples} examples, none dropped (variant {r.Get(variant)} weights by reward)");
            int code = PreferenceReport.Finish(r, "alol", result, options,
                $"model saved to {Path.Combine(options.OutputDir, CausalLmTrainer.ModelFolder)} (Hugging Face format), value head to {Path.Combine(options.OutputDir, AlolTrainer.ValueFolder)}",
                "kl", "importance_weight", "advantage", "reward");
            if (code != 0 || r.Get(data) is not null || r.Get(evalPrompts) == 0) return code;

            var distinct = ReviewCorpus.Prompts(r.Get(corpusSeed), r.Get(corpusSize)).Eval.Take(r.Get(evalPrompts)).ToList();
            var prompts = Enumerable.Repeat(distinct, r.Get(evalSamples)).SelectMany(x => x).ToList();
            using var initial = ModelIO.Load(modelDir);
            var before = SentimentEval.Run(initial, initial, tokenizer, prompts, r.Get(maxNew), options.Seed);
            var after = SentimentEval.Run(policy, initial, tokenizer, prompts, r.Get(maxNew), options.Seed);
            r.Out.WriteLine($"alol: held-out eval ({distinct.Count} prompts × {r.Get(evalSamples)} samples): true reward {F(before.TrueReward)} → {F(after.TrueReward)}, " +
                            $"KL to initial {F(after.KlToInitial)}, distinct-2 {F(before.Distinct2)} → {F(after.Distinct2)}");
            return 0;
        });
        return cmd;
    }

    private static string F(double x) => x.ToString("F4", CultureInfo.InvariantCulture);
}
