using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using FineAlign.Data.Corpus;
using FineAlign.Evaluation;
using FineAlign.Models;
using FineAlign.Trainers;

namespace FineAlign.Cli.Commands;

/// <summary><c>finealign ppo-compare</c>: the proof table — four reward variants from one policy, same budget.</summary>
public static class PpoCompareCommand
{
    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("ppo-compare",
            "Runs PPO from one policy with (a) a sequence reward, (b) TLCR continuous token rewards, (c) discrete ±1 token rewards and " +
            "(d) pivot-token segment rewards, same seed and budget, then measures held-out true sentiment, KL to the initial policy, " +
            "distinct-1/2 and length. Writes comparison.md, comparison.json and comparison.png.");
        var disc = cmd.Declare("--discriminator", "runs/tlcr/model", "TLCR discriminator folder (finealign tlcr-train) for variants b-d.");
        var seqReward = cmd.Declare("--sequence-reward", "lexicon", "Reward spec of variant (a): 'lexicon' (ground-truth sequence score) or rm:PATH.");
        var variants = cmd.Declare<string[]>("--variants", ["sequence", "tlcr", "discrete", "pivot"], "Which variants to run.");
        var evalPrompts = cmd.Declare("--eval-prompts", 64, "Held-out prompts for the final evaluation.", check: v => v >= 1 ? null : "must be at least 1");
        var flags = OnlineRlFlags.Declare(cmd, OnlineRlOptions.Ppo, defaultSteps: 25, defaultOut: "runs/ppo-compare");

        cmd.SetRecipeAction((r, ct) =>
        {
            flags.ApplyThreads(r);
            if (r.Get(flags.Rollout.Endpoints).Length > 0) throw new FineAlignException("ppo-compare generates in-process; --rollout-endpoint is for ppo, grpo and rloo");
            var (train, heldOut, corpus) = flags.LoadPrompts(r);
            if (!corpus) throw new FineAlignException("ppo-compare measures true sentiment and needs the built-in corpus prompts; omit --prompts");
            var evalSet = heldOut.Take(r.Get(evalPrompts)).ToList();
            string root = r.Get(flags.Output.Out);
            Directory.CreateDirectory(root);
            string d = r.Get(disc);
            var specs = new Dictionary<string, string>
            {
                ["sequence"] = r.Get(seqReward), ["tlcr"] = $"tlcr:{d}", ["discrete"] = $"discrete:{d}", ["pivot"] = $"pivot:tlcr:{d}",
            };
            foreach (var v in r.Get(variants))
                if (!specs.ContainsKey(v)) throw new FineAlignException($"unknown variant '{v}' (sequence, tlcr, discrete, pivot)");
            int maxNew = r.Get(flags.MaxNewTokens);
            long evalSeed = r.Get(flags.Seed) + Seeds.HeldOutEvalOffset;

            SentimentEvalResult initial;
            {
                var (p0, ref0, v0, tok0) = flags.LoadModels(r, flags.Options(r));
                using var _p = p0; using var _r = ref0; using var _v = v0;
                initial = SentimentEval.Run(p0, ref0, tok0, evalSet, maxNew, evalSeed);
            }
            r.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"ppo-compare: initial policy true reward {initial.TrueReward:F3} on {evalSet.Count} held-out prompts"));

            var rows = new List<PpoVariantResult>();
            foreach (var name in r.Get(variants))
            {
                ct.ThrowIfCancellationRequested();
                var (policy, reference, value, tokenizer) = flags.LoadModels(r, flags.Options(r));
                using var p = policy; using var rf = reference; using var vm = value;
                var source = flags.Reward.Build(r, tokenizer, [specs[name]]);
                string dir = Path.Combine(root, name);
                if (Directory.Exists(dir)) Directory.Delete(dir, true); // each comparison run starts fresh
                var options = flags.Options(r) with { OutputDir = dir, SaveRollouts = false, SaveSteps = 0, Resume = false };
                var clock = Stopwatch.StartNew();
                var result = CliProgress.Run(r.Out, progress =>
                {
                    using var trainer = new OnlineRlTrainer(policy, reference, value, tokenizer, source, train, options)
                    {
                        Progress = progress, WriteTensorBoard = false, TrueReward = (_, resp) => Lexicon.TrueReward(resp),
                        PromptColumns = flags.PromptColumns(r, source),
                    };
                    return trainer.Train(ct);
                });
                double secs = clock.Elapsed.TotalSeconds;
                var eval = SentimentEval.Run(policy, reference, tokenizer, evalSet, maxNew, evalSeed);
                var lastLog = result.LogHistory[^1];
                var curve = result.LogHistory.Where(e => e.ContainsKey("env/true_reward")).Select(e => (e["step"], e["env/true_reward"])).ToList();
                rows.Add(new PpoVariantResult(name, specs[name], eval, lastLog["objective/scores"], lastLog["objective/kl"], curve, secs));
                r.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"ppo-compare: {name}: true reward {eval.TrueReward:F3} (initial {initial.TrueReward:F3}), KL {eval.KlToInitial:F2}, distinct-2 {eval.Distinct2:F3}, {secs:F0} s"));
            }

            string table = PpoComparison.MarkdownTable(initial, rows);
            File.WriteAllText(Path.Combine(root, "comparison.md"), table);
            File.WriteAllText(Path.Combine(root, "comparison.json"), JsonSerializer.Serialize(new
            {
                initial, eval_prompts = evalSet.Count, steps = r.Get(flags.Steps), batch_size = r.Get(flags.BatchSize),
                variants = rows.Select(x => new { x.Name, x.Reward, x.Eval, x.FinalScore, x.FinalKl, x.Seconds }),
            }, new JsonSerializerOptions { WriteIndented = true }));
            PpoComparison.Plot(initial, rows, Path.Combine(root, "comparison.png"));
            r.Out.Write(table);
            r.Out.WriteLine($"ppo-compare: table → {Path.Combine(root, "comparison.md")}, plot → {Path.Combine(root, "comparison.png")}");
            return 0;
        });
        return cmd;
    }
}
