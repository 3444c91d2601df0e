using System.Globalization;
using System.Text.Json;
using FineAlign.Data;
using FineAlign.Data.Corpus;
using FineAlign.Evaluation;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Rewards;
using FineAlign.Text;
using FineAlign.Trainers;
using TorchSharp;

namespace FineAlign.Cli.Commands;

/// <summary>
/// <c>finealign grpo</c> and <c>finealign rloo</c>: one critic-free trainer (<see cref="GroupTrainer"/>) with
/// different defaults. grpo: group-normalised advantages, KL as a k3 loss term (β = 0 by default, as TRL);
/// rloo: leave-one-out baseline, KL folded into the reward (0.05). <c>--advantage reinforce++</c> selects REINFORCE++.
/// </summary>
public static class GroupCommand
{
    public static RecipeCommand Create(string name)
    {
        bool rloo = name == "rloo";
        var cmd = new RecipeCommand(name, rloo
            ? "RLOO: G samples per prompt, advantage = reward − mean of the other G − 1 rewards, KL to the reference folded into the " +
              "reward (--kl-coef), per-token clipped ratio, no value model. Rewards: --reward lexicon | lexicon:token | rm:PATH | tlcr:PATH | " +
              "discrete:PATH | pivot:SPEC (@WEIGHT; dense rewards are summed per completion). Writes metrics.jsonl (TRL names), checkpoints, policy/."
            : "GRPO: G samples per prompt, advantage = (reward − group mean) / std (--scale-rewards group|batch|none), optional k3 KL loss " +
              "(--beta), per-token clipped ratio, no value model; --advantage rloo|reinforce++ switches the estimator. Rewards: --reward lexicon | " +
              "lexicon:token | rm:PATH | tlcr:PATH | discrete:PATH | pivot:SPEC (@WEIGHT). Writes metrics.jsonl (TRL names), checkpoints, policy/.");
        static Func<int, string?> AtLeast(int min) => v => v >= min ? null : $"must be at least {min}";
        Func<double, string?> positive = v => v > 0 && double.IsFinite(v) ? null : "must be a positive number";
        Func<double, string?> nonNegative = v => v >= 0 && double.IsFinite(v) ? null : "must be ≥ 0";
        var outDir = cmd.Declare("--out", $"runs/{name}", "Output folder.", alias: "-o");
        var policyDir = cmd.Declare("--policy", "runs/sft/model", "Initial policy (HF folder, e.g. from finealign sft); also the reference model.", alias: "--model");
        var reward = cmd.Declare<string[]>("--reward", ["lexicon"], "Reward source spec (repeatable, SPEC@WEIGHT); see the description.");
        var advantage = cmd.Declare("--advantage", rloo ? "rloo" : "grpo", "Advantage estimator: grpo, rloo or reinforce++.",
            check: v => ParseAdvantage(v) is null ? "must be grpo, rloo or reinforce++" : null);
        var prompts = cmd.Declare<string?>("--prompts", null, "JSONL of prompts: a 'prompt' field per line, or a preference file (one prompt per pair) or a feedback file (each prompt once). Omitted: the built-in corpus's training prompts.");
        var corpusSize = cmd.Declare("--corpus-size", 4000, "Reviews whose prompts are used when --prompts is omitted.", check: AtLeast(10));
        var corpusSeed = cmd.Declare("--corpus-seed", 1234, "Seed of the built-in corpus.");
        var seed = cmd.Declare("--seed", 42, "Seed of sampling and mini-batch order (same seed, same run on CPU).");
        var peft = PeftFlags.Declare(cmd);
        var steps = cmd.Declare("--steps", 50, "Generation batches to train on.", check: AtLeast(1), alias: "--max-steps");
        var numGen = cmd.Declare("--num-generations", 4, "G: completions sampled per prompt (at least 2).");
        var batch = cmd.Declare("--batch-size", 16, "Completions per generation batch (a multiple of --num-generations).", check: AtLeast(1));
        var miniBatch = cmd.Declare("--mini-batch-size", 0, "Completions per optimizer step (divides --batch-size; 0 = the whole batch).", check: AtLeast(0));
        var iterations = cmd.Declare("--num-iterations", 1, "μ: update passes over each generation batch.", check: AtLeast(1));
        var lr = cmd.Declare("--learning-rate", 1e-4, "AdamW learning rate (constant).", check: positive, alias: "--lr");
        var maxGradNorm = cmd.Declare("--max-grad-norm", 1.0, "Gradient-norm clipping (0 = none).", check: nonNegative);
        var epsilon = cmd.Declare("--epsilon", 0.2, "ε of the per-token clipped ratio.", check: positive);
        var scale = cmd.Declare("--scale-rewards", RewardScaling.Group, "GRPO only: divide centred rewards by the group std, the batch std, or none.");
        var lossType = cmd.Declare("--loss-type", "grpo", "Loss aggregation: grpo (mean of per-sequence token means), token (sum / active tokens), dr_grpo (sum / (batch × --max-new-tokens)).",
            check: v => ParseLoss(v) is null ? "must be grpo, token or dr_grpo" : null);
        var beta = cmd.Declare("--beta", 0.0, "β of the k3 KL(π ‖ π_ref) loss term.", check: nonNegative);
        var klCoef = cmd.Declare("--kl-coef", rloo ? 0.05 : 0.0, "β of the k1 KL penalty folded into the reward (RLOO, REINFORCE++).", check: nonNegative);
        var maxNew = cmd.Declare("--max-new-tokens", 64, "Completion length limit (tokens).", check: AtLeast(1));
        var temperature = cmd.Declare("--temperature", 1.0, "Sampling temperature (log-probs use the same).", check: positive);
        var topP = cmd.Declare("--top-p", 1.0, "Nucleus sampling.", check: v => v is > 0 and <= 1 ? null : "must be in (0, 1]");
        var retokenize = cmd.Declare("--retokenize", false, "Allow a sequence reward model with another tokenizer (decode and re-tokenise, with a warning).");
        var mapping = cmd.Declare("--tlcr-mapping", TlcrMapping.Paper, "TLCR probability → reward: paper (2p−1), code (tanh(p−½)) or discrete.");
        var saveSteps = cmd.Declare("--save-steps", 0, "Checkpoint every N generation batches (and at the end).", check: AtLeast(0));
        var saveRollouts = cmd.Declare("--save-rollouts", false, "Write every completion to rollouts.jsonl (prompt, response, reward, advantage, KL).");
        var resume = cmd.Declare("--resume", false, "Continue from the latest checkpoint in --out.");
        var evalPrompts = cmd.Declare("--eval-prompts", 0, "Built-in corpus only: held-out prompts scored for true reward and KL before and after training (eval.json).", check: AtLeast(0));
        var threads = cmd.Declare("--threads", 0, "Torch CPU threads (0 = one per core).", check: AtLeast(0));

        cmd.SetRecipeAction((r, ct) =>
        {
            if (r.Get(threads) > 0) torch.set_num_threads(r.Get(threads));
            var options = new GroupOptions
            {
                OutputDir = r.Get(outDir), Seed = r.Get(seed), Advantage = ParseAdvantage(r.Get(advantage))!.Value, Steps = r.Get(steps),
                BatchSize = r.Get(batch), NumGenerations = r.Get(numGen), MiniBatchSize = r.Get(miniBatch), NumIterations = r.Get(iterations),
                LearningRate = r.Get(lr), MaxGradNorm = r.Get(maxGradNorm), Epsilon = r.Get(epsilon), ScaleRewards = r.Get(scale),
                LossType = ParseLoss(r.Get(lossType))!.Value, Beta = r.Get(beta), KlCoef = r.Get(klCoef), MaxNewTokens = r.Get(maxNew),
                Temperature = r.Get(temperature), TopP = r.Get(topP), SaveSteps = r.Get(saveSteps), SaveRollouts = r.Get(saveRollouts),
                Resume = r.Get(resume),
            };
            options.Validate(); // before loading anything: bad settings are a one-line error

            IReadOnlyList<string> train, heldOut;
            bool corpus = r.Get(prompts) is null;
            if (r.Get(prompts) is string path)
            {
                train = PromptReader.Read(path).ToList();
                if (train.Count == 0) throw new FineAlignException($"{path}: no prompts");
                heldOut = [];
                if (r.Get(evalPrompts) > 0) throw new FineAlignException("--eval-prompts scores true sentiment on the built-in corpus; omit --prompts");
            }
            else (train, heldOut) = ReviewCorpus.Prompts(r.Get(corpusSeed), r.Get(corpusSize));

            string dir = r.Get(policyDir);
            var tokenizer = TokenizerLoader.Load(dir);
            using var policy = peft.Prepare(r, ModelIO.Load(dir), dir, r.Get(seed));
            using var reference = FineAlign.Training.ModelSetup.Reference(policy) ?? ModelIO.Load(dir);   // LoRA: the base with the adapter off
            var source = RewardSpecs.Build(r.Get(reward), tokenizer, r.Get(retokenize), m => r.Error.WriteLine("warning: " + m),
                new TlcrOptions { Mapping = r.Get(mapping) });
            var inv = CultureInfo.InvariantCulture;
            string label = ParseAdvantage(r.Get(advantage)) switch { GroupAdvantage.Rloo => "rloo", GroupAdvantage.ReinforcePlusPlus => "reinforce++", _ => "grpo" };
            r.Out.WriteLine($"{name}: {label} advantages, policy {dir}, reward {string.Join(" + ", r.Get(reward))}, {train.Count} prompts, " +
                            $"{options.Steps} batches of {options.BatchSize} ({options.BatchSize / options.NumGenerations} prompts × {options.NumGenerations}), output {options.OutputDir}");

            var evalSet = heldOut.Take(r.Get(evalPrompts)).ToList();
            long evalSeed = r.Get(seed) + 7777;
            SentimentEvalResult? before = null;
            if (evalSet.Count > 0 && !options.Resume)
            {
                before = SentimentEval.Run(policy, reference, tokenizer, evalSet, options.MaxNewTokens, evalSeed);
                r.Out.WriteLine(string.Create(inv, $"{name}: before: true reward {before.TrueReward:F4}, KL {before.KlToInitial:F4} on {evalSet.Count} held-out prompts"));
            }

            var result = CliProgress.Run(r.Out, progress =>
            {
                using var trainer = new GroupTrainer(policy, reference, tokenizer, source, train, options)
                {
                    Progress = progress,
                    TrueReward = corpus ? (_, resp) => Lexicon.TrueReward(resp) : null,
                };
                return trainer.Train(ct);
            });
            if (!result.Completed)
            {
                r.Out.WriteLine($"{name}: stopped at generation batch {result.Steps}; checkpoint {result.LastCheckpoint}. Continue with --resume.");
                return 130;
            }
            var last = result.LogHistory[^1];
            string trueText = last.TryGetValue("env/true_reward", out var tr) ? string.Create(inv, $", env/true_reward {tr:F4}") : "";
            r.Out.WriteLine(string.Create(inv, $"{name}: {result.Steps} batches; last reward {last["reward"]:F4}, kl {last["kl"]:F4}, " +
                                               $"frac_reward_zero_std {last["frac_reward_zero_std"]:F3}") + trueText);
            if (evalSet.Count > 0)
            {
                var after = SentimentEval.Run(policy, reference, tokenizer, evalSet, options.MaxNewTokens, evalSeed);
                r.Out.WriteLine(string.Create(inv, $"{name}: after: true reward {after.TrueReward:F4}, KL {after.KlToInitial:F4}, " +
                                                   $"distinct-2 {after.Distinct2:F3}, mean length {after.MeanLength:F1}"));
                File.WriteAllText(Path.Combine(options.OutputDir, "eval.json"),
                    JsonSerializer.Serialize(new { before, after }, new JsonSerializerOptions { WriteIndented = true }));
            }
            r.Out.WriteLine($"{name}: policy saved to {Path.Combine(options.OutputDir, GroupTrainer.PolicyFolder)}");
            return 0;
        });
        return cmd;
    }

    private static LossAggregation? ParseLoss(string v) => v.Trim().ToLowerInvariant().Replace("-", "").Replace("_", "") switch
    {
        "grpo" => LossAggregation.Grpo,
        "token" or "dapo" => LossAggregation.Token,
        "drgrpo" => LossAggregation.DrGrpo,
        _ => null,
    };

    private static GroupAdvantage? ParseAdvantage(string v) => v.Trim().ToLowerInvariant() switch
    {
        "grpo" => GroupAdvantage.Grpo,
        "rloo" => GroupAdvantage.Rloo,
        "reinforce++" or "reinforce-plus-plus" or "reinforce_pp" or "reinforcepp" => GroupAdvantage.ReinforcePlusPlus,
        _ => null,
    };
}
