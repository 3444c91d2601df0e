using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using FineAlign.Data.Corpus;
using FineAlign.Models;
using FineAlign.Rewards;
using FineAlign.Text;
using FineAlign.Trainers;

namespace FineAlign.Evaluation;

/// <summary>One PPO run of the comparison: a name and the reward spec it trains on.</summary>
public sealed record PpoVariant(string Name, string RewardSpec);

/// <summary>
/// What the comparison runs on: training prompts, held-out prompts (built-in corpus: its true sentiment is measured),
/// the PPO options shared by every variant (each variant writes to <c>OutputDir/&lt;name&gt;</c>), and the evaluation's
/// response length and sampling seed.
/// </summary>
public sealed record PpoComparisonSetup(IReadOnlyList<string> TrainPrompts, IReadOnlyList<string> EvalPrompts, OnlineRlOptions Options,
    int MaxNewTokens, long EvalSeed);

/// <summary>The starting policy's held-out evaluation and one row per variant, in run order.</summary>
public sealed record PpoComparisonResult(SentimentEvalResult Initial, IReadOnlyList<PpoVariantResult> Rows, int EvalPrompts, int Steps, int BatchSize);

/// <summary>Fresh models for one run: policy, frozen reference, value model (GAE) and tokenizer; the runner disposes them.</summary>
public delegate (CausalLM Policy, CausalLM Reference, ValueModel? Value, TextTokenizer Tokenizer) PpoModelLoader();

/// <summary>One row of the PPO comparison: a reward variant, its final eval and its training curve.</summary>
public sealed record PpoVariantResult(string Name, string Reward, SentimentEvalResult Eval, double FinalScore, double FinalKl,
    IReadOnlyList<(double Step, double TrueReward)> Curve, double Seconds);

/// <summary>The side-by-side table and plot of <c>finealign ppo-compare</c>.</summary>
public static class PpoComparison
{
    /// <summary>The variant names the comparison knows, in its default order.</summary>
    public static readonly IReadOnlyList<string> VariantNames = ["sequence", "tlcr", "discrete", "pivot"];

    /// <summary>
    /// The requested variants with their reward specs: (a) <paramref name="sequenceReward"/>, (b) TLCR continuous token
    /// rewards, (c) discrete ±1 token rewards, (d) pivot-token segment rewards, (b–d) from <paramref name="discriminator"/>.
    /// An unknown name is one error naming the known ones.
    /// </summary>
    public static IReadOnlyList<PpoVariant> Variants(IEnumerable<string> names, string sequenceReward, string discriminator)
    {
        var specs = new Dictionary<string, string>
        {
            ["sequence"] = sequenceReward, ["tlcr"] = $"tlcr:{discriminator}", ["discrete"] = $"discrete:{discriminator}",
            ["pivot"] = $"pivot:tlcr:{discriminator}",
        };
        return names.Select(n => specs.TryGetValue(n, out var spec) ? new PpoVariant(n, spec)
            : throw new FineAlignException($"unknown variant '{n}' ({string.Join(", ", VariantNames)})")).ToList();
    }

    /// <summary>
    /// Runs the comparison: evaluates the starting policy on the held-out prompts, then for each variant trains PPO from
    /// fresh copies of the same models (same seed and budget; its folder under <c>Options.OutputDir</c> is started
    /// fresh) and evaluates it the same way (true sentiment, KL to the initial policy, distinct-1/2, length, fluency).
    /// <paramref name="log"/> receives one line per finished run; <paramref name="promptColumns"/> gives a reward that reads
    /// dataset columns its rows (null: none, and such a reward is refused by the trainer).
    /// </summary>
    public static PpoComparisonResult Run(PpoComparisonSetup setup, IReadOnlyList<PpoVariant> variants, PpoModelLoader loadModels,
        Func<TextTokenizer, string, RewardSource> buildReward, IProgress<ProgressUpdate>? progress = null, Action<string>? log = null,
        CancellationToken ct = default, Func<RewardSource, IReadOnlyList<IReadOnlyDictionary<string, string>>?>? promptColumns = null)
    {
        if (variants.Count == 0) throw new FineAlignException("ppo-compare: no variants to run");
        if (setup.EvalPrompts.Count == 0) throw new FineAlignException("ppo-compare: no held-out prompts to evaluate on");
        var inv = CultureInfo.InvariantCulture;
        SentimentEvalResult initial;
        {
            var (p0, ref0, v0, tok0) = loadModels();
            using var _p = p0; using var _r = ref0; using var _v = v0;
            initial = SentimentEval.Run(p0, ref0, tok0, setup.EvalPrompts, setup.MaxNewTokens, setup.EvalSeed);
        }
        log?.Invoke(string.Create(inv, $"ppo-compare: initial policy true reward {initial.TrueReward:F3} on {setup.EvalPrompts.Count} held-out prompts"));

        var rows = new List<PpoVariantResult>();
        foreach (var variant in variants)
        {
            ct.ThrowIfCancellationRequested();
            var (policy, reference, value, tokenizer) = loadModels();
            using var p = policy; using var rf = reference; using var vm = value;
            var source = buildReward(tokenizer, variant.RewardSpec);
            string dir = Path.Combine(setup.Options.OutputDir, variant.Name);
            if (Directory.Exists(dir)) Directory.Delete(dir, true); // each comparison run starts fresh
            var options = setup.Options with { OutputDir = dir, SaveRollouts = false, SaveSteps = 0, Resume = false };
            var clock = Stopwatch.StartNew();
            OnlineRlResult result;
            using (var trainer = new OnlineRlTrainer(policy, reference, value, tokenizer, source, setup.TrainPrompts, options)
                   {
                       Progress = progress, WriteTensorBoard = false, TrueReward = (_, resp) => Lexicon.TrueReward(resp),
                       PromptColumns = promptColumns?.Invoke(source),   // dataset columns for rewards that read them (OnlineRlTrainer)
                   })
                result = trainer.Train(ct);
            double secs = clock.Elapsed.TotalSeconds;
            if (!result.Completed) throw new OperationCanceledException($"ppo-compare: {variant.Name} stopped at step {result.Steps}");
            var eval = SentimentEval.Run(policy, reference, tokenizer, setup.EvalPrompts, setup.MaxNewTokens, setup.EvalSeed);
            var lastLog = result.LogHistory[^1];
            var curve = result.LogHistory.Where(e => e.ContainsKey("env/true_reward")).Select(e => (e["step"], e["env/true_reward"])).ToList();
            rows.Add(new PpoVariantResult(variant.Name, variant.RewardSpec, eval, lastLog["objective/scores"], lastLog["objective/kl"], curve, secs));
            log?.Invoke(string.Create(inv,
                $"ppo-compare: {variant.Name}: true reward {eval.TrueReward:F3} (initial {initial.TrueReward:F3}), KL {eval.KlToInitial:F2}, distinct-2 {eval.Distinct2:F3}, {secs:F0} s"));
        }
        return new PpoComparisonResult(initial, rows, setup.EvalPrompts.Count, setup.Options.Steps, setup.Options.BatchSize);
    }

    /// <summary>comparison.md (the table), comparison.json and comparison.png into <paramref name="root"/>; returns the table.</summary>
    public static string Write(PpoComparisonResult result, string root)
    {
        Directory.CreateDirectory(root);
        string table = MarkdownTable(result.Initial, result.Rows);
        AtomicFile.WriteAllText(Path.Combine(root, "comparison.md"), table);
        AtomicFile.WriteAllText(Path.Combine(root, "comparison.json"), JsonSerializer.Serialize(new
        {
            initial = result.Initial, eval_prompts = result.EvalPrompts, steps = result.Steps, batch_size = result.BatchSize,
            variants = result.Rows.Select(x => new { x.Name, x.Reward, x.Eval, x.FinalScore, x.FinalKl, x.Seconds }),
        }, new JsonSerializerOptions { WriteIndented = true }));
        Plot(result.Initial, result.Rows, Path.Combine(root, "comparison.png"));
        return table;
    }

    public static string MarkdownTable(SentimentEvalResult initial, IReadOnlyList<PpoVariantResult> rows)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.AppendLine("| variant | reward | true reward (held-out) | Δ vs initial | KL to initial | distinct-1 | distinct-2 | mean length | train time |");
        sb.AppendLine("|---|---|---:|---:|---:|---:|---:|---:|---:|");
        sb.AppendLine(string.Create(inv, $"| initial (SFT) | — | {initial.TrueReward:F3} | — | 0 | {initial.Distinct1:F3} | {initial.Distinct2:F3} | {initial.MeanLength:F1} | — |"));
        foreach (var r in rows)
            sb.AppendLine(string.Create(inv,
                $"| {r.Name} | `{r.Reward}` | {r.Eval.TrueReward:F3} | {r.Eval.TrueReward - initial.TrueReward:+0.000;-0.000} | {r.Eval.KlToInitial:F2} | {r.Eval.Distinct1:F3} | {r.Eval.Distinct2:F3} | {r.Eval.MeanLength:F1} | {r.Seconds:F0} s |"));
        return sb.ToString();
    }

    /// <summary>True reward of the rollouts against the rollout batch, one line per variant, with the initial level dashed.</summary>
    public static void Plot(SentimentEvalResult initial, IReadOnlyList<PpoVariantResult> rows, string pngPath)
    {
        var plot = new ScottPlot.Plot();
        foreach (var r in rows)
        {
            if (r.Curve.Count == 0) continue;
            var s = plot.Add.Scatter(r.Curve.Select(c => c.Step).ToArray(), r.Curve.Select(c => c.TrueReward).ToArray());
            s.LegendText = r.Name;
            s.MarkerSize = 3;
            s.LineWidth = 2;
        }
        var h = plot.Add.HorizontalLine(initial.TrueReward);
        h.LinePattern = ScottPlot.LinePattern.Dashed;
        h.LegendText = "initial (held-out eval)";
        plot.Title("PPO on the built-in corpus: true sentiment of rollouts");
        plot.XLabel("rollout batch");
        plot.YLabel("true reward (mean word valence)");
        plot.ShowLegend(ScottPlot.Alignment.LowerRight);
        var dir = Path.GetDirectoryName(Path.GetFullPath(pngPath));
        if (dir is not null) Directory.CreateDirectory(dir);
        plot.SavePng(pngPath, 900, 540);
    }
}
