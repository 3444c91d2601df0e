using System.Globalization;
using System.Text.Json;
using FineAlign.Data.Corpus;
using FineAlign.Evaluation;
using FineAlign.Generation;
using FineAlign.Trainers;

namespace FineAlign.Cli.Commands;

/// <summary>
/// <c>finealign ppo</c>, <c>grpo</c> and <c>rloo</c>: one online-RL engine (<see cref="OnlineRlTrainer"/>) and one option
/// set (<see cref="OnlineRlFlags"/>); the command only picks the preset. ppo: GAE with a value model, KL folded into the
/// reward (0.05); grpo: group-normalised advantages, KL as a k3 loss term (β = 0 by default, as TRL); rloo: leave-one-out
/// baseline, KL folded into the reward (0.05). <c>--advantage</c> switches the estimator of any of them.
/// </summary>
public static class OnlineRlCommand
{
    private static string Describe(string name) => name switch
    {
        "ppo" => "PPO (TRL conventions) with any dense reward: per-token KL penalty to the reference, GAE, whitened advantages, clipped " +
                 "policy and value losses.",
        "rloo" => "RLOO: G samples per prompt, advantage = reward − mean of the other G − 1 rewards, KL to the reference folded into the " +
                  "reward (--kl-coef), per-token clipped ratio, no value model (dense rewards are summed per completion).",
        _ => "GRPO: G samples per prompt, advantage = (reward − group mean) / std (--scale-rewards group|batch|none), optional k3 KL loss " +
             "(--beta), per-token clipped ratio, no value model.",
    } + $" --advantage {string.Join("|", FineAlign.Objectives.AdvantageEstimators.Names)} switches the estimator. Rewards: --reward " +
        RewardFlags.SpecHelp + ". Writes metrics.jsonl (TRL names), checkpoints, model/ (and value/ with GAE).";

    public static RecipeCommand Create(string name)
    {
        var preset = OnlineRlOptions.Preset(name);
        var cmd = new RecipeCommand(name, Describe(name));
        var flags = OnlineRlFlags.Declare(cmd, preset);
        var evalPrompts = cmd.Declare<string?>("--eval-prompts", null,
            "FILE: held-out prompts (PromptReader formats, first 64) evaluated as finealign eval-policy does — reward ± s.e., KL to the " +
            "initial policy, fluency proxy, distinct-1/2, length — logged as eval/* (metrics.jsonl, TensorBoard) at step 0, every " +
            "--eval-steps and at the end. An integer N instead (built-in corpus only): N held-out corpus prompts scored for true reward " +
            "and KL before and after training (eval.json).",
            check: v => v is null || File.Exists(v) || int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out int n) && n >= 0
                ? null : "must be an existing prompt file or a count ≥ 0");
        var evalSteps = cmd.Declare("--eval-steps", 0, "With --eval-prompts FILE: evaluate every N steps (0 = only at step 0 and at the end).", check: Checks.AtLeast(0));
        var evalReward = cmd.Declare<string[]>("--eval-reward", [], "With --eval-prompts FILE: reward spec(s) of the evaluation (as eval-policy's --reward). Omitted: the run's --reward.");
        var heldOutSeed = cmd.Declare("--eval-seed", 7819L, "With --eval-prompts FILE: sampling seed of the evaluation (eval-policy's default).");

        cmd.SetRecipeAction((r, ct) =>
        {
            flags.ApplyThreads(r);
            var options = flags.Options(r);
            options.Validate(); // before loading anything: bad settings are a one-line error
            var (train, heldOut, corpus) = flags.LoadPrompts(r);
            options = flags.WithChatStop(options);
            string? evalArg = r.Get(evalPrompts);
            string? evalFile = evalArg is not null && File.Exists(evalArg) ? evalArg : null;
            int evalCount = evalArg is not null && evalFile is null ? int.Parse(evalArg, CultureInfo.InvariantCulture) : 0;
            if (!corpus && evalCount > 0) throw new FineAlignException("--eval-prompts N scores true sentiment on the built-in corpus; omit --prompts, or give --eval-prompts FILE");
            var (policy, reference, value, tokenizer) = flags.LoadModels(r, options);
            using var p = policy; using var rf = reference; using var v = value;
            if (r.Get(flags.Prompts) is string promptFile && r.Get(flags.MaxPromptLength) is null)
                FineAlign.Data.PromptReader.CheckFit(promptFile, tokenizer, policy.Config.MaxPositionEmbeddings, r.Get(flags.MaxNewTokens), flags.Chat is { } chat ? () => chat : null);
            train = flags.FitPrompts(r, train, tokenizer);
            var source = flags.Reward.Build(r, tokenizer);
            var columns = flags.PromptColumns(r, source);
            var inv = CultureInfo.InvariantCulture;
            r.Out.WriteLine($"{name}: {options.Advantage} advantages, policy {r.Get(flags.Policy)}, reward {string.Join(" + ", r.Get(flags.Reward.Specs))}, " +
                            $"{train.Count} prompts, {options.Steps} batches of {options.BatchSize} ({options.BatchSize / options.NumGenerations} prompts × " +
                            $"{options.NumGenerations}), output {options.OutputDir}");

            var evalSet = heldOut.Take(evalCount).ToList();
            long evalSeed = r.Get(flags.Seed) + Seeds.HeldOutEvalOffset;
            SentimentEvalResult? before = null;
            if (evalSet.Count > 0 && !options.Resume)
            {
                before = SentimentEval.Run(policy, reference, tokenizer, evalSet, options.MaxNewTokens, evalSeed);
                r.Out.WriteLine(string.Create(inv, $"{name}: before: true reward {before.TrueReward:F4}, KL {before.KlToInitial:F4} on {evalSet.Count} held-out prompts"));
            }

            // eval-policy's definitions on the user's prompts, against the frozen reference (the initial policy).
            string[] evalSpecs = r.Get(evalReward) is { Length: > 0 } er ? er : r.Get(flags.Reward.Specs);
            if (evalFile is not null && evalSpecs.Length == 0) throw new UsageException("--eval-prompts FILE needs a reward: give --eval-reward SPEC (or --reward)");
            using var remote = flags.Rollout.Build(r, options.OutputDir);
            var local = flags.Rollout.Local(r, policy, tokenizer);
            // Held-out evaluation samples on the rollout servers only when they hold the current weights (synced after every update).
            var periodic = evalFile is null ? null
                : HeldOutEval.FromFile(evalFile, string.Join(EvalReward.Separator, evalSpecs), tokenizer, r.Get(evalSteps), options.MaxNewTokens, r.Get(heldOutSeed),
                    warn: w => r.Error.WriteLine("warning: " + w), rollouts: remote is not null && flags.Rollout.SyncFull(r) ? remote : null);
            if (remote is not null) r.Out.WriteLine($"{name}: rollouts on {string.Join(", ", remote.LiveEndpoints)} (weight sync: {flags.Rollout.SyncMode(r)})");
            var result = CliProgress.Run(r.Out, progress =>
            {
                using var trainer = new OnlineRlTrainer(policy, reference, value, tokenizer, source, train, options)
                {
                    Progress = progress,
                    PromptColumns = columns,
                    Rollouts = remote ?? (IRolloutEngine)local,
                    SyncRolloutWeights = remote is not null && flags.Rollout.SyncFull(r),
                    TrueReward = corpus ? (_, resp) => Lexicon.TrueReward(resp) : null,
                    Evaluate = periodic is null ? null : _ => periodic.Evaluate(policy, reference).Metrics("eval/"),
                    EvalSteps = r.Get(evalSteps),
                };
                return trainer.Train(ct);
            });
            if (!result.Completed)
            {
                r.Out.WriteLine($"{name}: stopped at {options.StepNoun} {result.Steps}; checkpoint {result.LastCheckpoint}. Continue with --resume.");
                return 130;
            }
            var last = result.LogHistory[^1];
            string trueText = last.TryGetValue("env/true_reward", out var tr) ? string.Create(inv, $", env/true_reward {tr:F4}") : "";
            r.Out.WriteLine(options.UsesCritic
                ? string.Create(inv, $"{name}: {result.Steps} rollout batches; last objective/scores {last["objective/scores"]:F4}, objective/kl {last["objective/kl"]:F4}") + trueText
                : string.Create(inv, $"{name}: {result.Steps} batches; last reward {last["reward"]:F4}, kl {last["kl"]:F4}, " +
                                     $"frac_reward_zero_std {last["frac_reward_zero_std"]:F3}") + trueText);
            if (evalSet.Count > 0)
            {
                var after = SentimentEval.Run(policy, reference, tokenizer, evalSet, options.MaxNewTokens, evalSeed);
                r.Out.WriteLine(string.Create(inv, $"{name}: after: true reward {after.TrueReward:F4}, KL {after.KlToInitial:F4}, " +
                                                   $"distinct-2 {after.Distinct2:F3}, mean length {after.MeanLength:F1}"));
                File.WriteAllText(Path.Combine(options.OutputDir, "eval.json"),
                    JsonSerializer.Serialize(new { before, after }, new JsonSerializerOptions { WriteIndented = true }));
            }
            string model = Path.Combine(options.OutputDir, OnlineRlTrainer.ModelFolder);
            r.Out.WriteLine(value is null ? $"{name}: policy saved to {model}"
                : $"{name}: policy saved to {model}, value model to {Path.Combine(options.OutputDir, OnlineRlTrainer.ValueFolder)}");
            return 0;
        });
        return cmd;
    }
}
