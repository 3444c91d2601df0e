using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;

namespace FineAlign.Evaluation;

/// <summary>What a report says about how it was made: title, the command that reproduces it, per-stage timings.</summary>
public sealed record ReportContext
{
    public string Title { get; init; } = "FineAlign comparison";
    /// <summary>Shell command that reproduces the whole report (e.g. <c>finealign demo --seed 42 --out demo</c>).</summary>
    public string ReproduceCommand { get; init; } = "";
    /// <summary>Every step as a stand-alone command (what the pipeline ran), in order.</summary>
    public IReadOnlyList<string> Commands { get; init; } = [];
    public IReadOnlyList<(string Stage, double Seconds)> Timings { get; init; } = [];
    public string? TensorBoardDir { get; init; }
    public IReadOnlyList<string> Notes { get; init; } = [];
}

/// <summary>
/// The comparison page of <c>finealign demo</c> / <c>finealign report</c>: a results table, reward-vs-step and
/// reward-vs-KL plots, sample responses and the commands that reproduce it, as Markdown and as one self-contained HTML
/// file (plots inlined), plus <c>results.json</c>.
/// </summary>
public static class ComparisonReport
{
    public const string MarkdownFile = "report.md", HtmlFile = "report.html", JsonFile = "results.json",
        StepPlotFile = "reward_vs_step.png", KlPlotFile = "reward_vs_kl.png";

    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>Writes every file of the report into <paramref name="outDir"/> and returns the Markdown path.</summary>
    public static string Write(IReadOnlyList<RunEvaluation> runs, string outDir, ReportContext context)
    {
        if (runs.Count == 0) throw new FineAlignException("nothing to report: no evaluated runs");
        var settings = runs[0].Settings;
        foreach (var r in runs)
            if (r.Settings with { BaseModel = "" } != settings with { BaseModel = "" })
                throw new FineAlignException($"run '{r.Name}' was evaluated with other settings ({r.Settings}) than '{runs[0].Name}' ({settings}); re-evaluate them together");
        Directory.CreateDirectory(outDir);
        RewardVsStepPlot(runs, Path.Combine(outDir, StepPlotFile));
        RewardVsKlPlot(runs, Path.Combine(outDir, KlPlotFile));
        AtomicFile.WriteAllText(Path.Combine(outDir, JsonFile), JsonSerializer.Serialize(new
        {
            settings,
            runs = runs.Select(r => new { r.Name, r.Method, r.Signal, r.IsBase, r.AnalyticKl, r.XAxis, final = r.Final, curve = r.Curve }),
        }, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
        string md = Path.Combine(outDir, MarkdownFile);
        AtomicFile.WriteAllText(md, Markdown(runs, context));
        AtomicFile.WriteAllText(Path.Combine(outDir, HtmlFile), Html(runs, context, outDir));
        return md;
    }

    private static RunEvaluation? Base(IReadOnlyList<RunEvaluation> runs) => runs.FirstOrDefault(r => r.IsBase);

    /// <summary>Header + one row per run; the same seed gives the same table.</summary>
    public static IReadOnlyList<string[]> TableRows(IReadOnlyList<RunEvaluation> runs)
    {
        var b = Base(runs);
        var rows = new List<string[]>
        {
            new[] { "run", "method", "reward signal", "true reward ± s.e.", "Δ vs base", "KL to base (nats)", "distinct-1", "distinct-2", "mean length" },
        };
        foreach (var r in runs)
        {
            var f = r.Final;
            string delta = b is null || r.IsBase ? "—" : (f.TrueReward - b.Final.TrueReward).ToString("+0.000;-0.000;0.000", Inv);
            string kl = r.IsBase ? "0" : f.Kl.ToString("F2", Inv) + (r.AnalyticKl ? " (bound)" : "");
            rows.Add([
                r.Name, r.Method, r.Signal, $"{f.TrueReward.ToString("F3", Inv)} ± {f.TrueRewardSe.ToString("F3", Inv)}", delta, kl,
                f.Distinct1.ToString("F3", Inv), f.Distinct2.ToString("F3", Inv), f.MeanLength.ToString("F1", Inv),
            ]);
        }
        return rows;
    }

    public static string MarkdownTable(IReadOnlyList<RunEvaluation> runs)
    {
        var rows = TableRows(runs);
        var sb = new StringBuilder();
        string Cell(string s) => s.Replace("|", "\\|", StringComparison.Ordinal);
        sb.AppendLine("| " + string.Join(" | ", rows[0]) + " |");
        sb.AppendLine("|" + string.Join("|", rows[0].Select((_, i) => i < 3 ? "---" : "---:")) + "|");
        foreach (var row in rows.Skip(1)) sb.AppendLine("| " + string.Join(" | ", row.Select(Cell)) + " |");
        return sb.ToString();
    }

    private static string SettingsLine(EvalSettings s) =>
        $"{s.Prompts} held-out prompts of the built-in corpus (size {s.CorpusSize}, seed {s.CorpusSeed}) × {s.SamplesPerPrompt} samples, " +
        $"temperature 1, at most {s.MaxNewTokens} new tokens, evaluation seed {s.Seed}; base model `{s.BaseModel}`.";

    private static IEnumerable<string> Explanations() =>
    [
        "**true reward**: the corpus generator's ground truth — mean valence of the words of the response (−1 … +1); no reward model sees it.",
        "**KL to base**: KL(π ‖ π_base) per response, Monte-Carlo estimate Σ_t log π − log π_base over the sampled tokens (k1); for best-of-n the analytic bound log n − (n−1)/n.",
        "**distinct-n**: distinct word n-grams / all word n-grams over all responses (lower = more repetitive); **mean length** in tokens.",
    ];

    public static string Markdown(IReadOnlyList<RunEvaluation> runs, ReportContext ctx)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"# {ctx.Title}").AppendLine();
        sb.AppendLine("Evaluation: " + SettingsLine(runs[0].Settings)).AppendLine();
        sb.Append(MarkdownTable(runs)).AppendLine();
        foreach (var e in Explanations()) sb.AppendLine("- " + e);
        foreach (var n in ctx.Notes) sb.AppendLine("- " + n);
        sb.AppendLine();
        sb.AppendLine($"![true reward vs training progress]({StepPlotFile})").AppendLine();
        sb.AppendLine($"![true reward vs KL to the base model]({KlPlotFile})").AppendLine();
        sb.AppendLine("## Samples (held-out prompts, one sample each, final policies)").AppendLine();
        foreach (var (prompt, answers) in SampleGroups(runs))
        {
            sb.AppendLine($"**Prompt:** `{prompt.ReplaceLineEndings(" ")}`").AppendLine();
            sb.AppendLine("| run | response | true reward |").AppendLine("|---|---|---:|");
            foreach (var (run, s) in answers)
                sb.AppendLine($"| {run} | {s.Response.ReplaceLineEndings(" ").Replace("|", "\\|", StringComparison.Ordinal)} | {s.TrueReward.ToString("F2", Inv)} |");
            sb.AppendLine();
        }
        sb.AppendLine("## Reproduce").AppendLine();
        if (ctx.ReproduceCommand.Length > 0) sb.AppendLine("```sh").AppendLine(ctx.ReproduceCommand).AppendLine("```").AppendLine();
        if (ctx.Commands.Count > 0)
        {
            sb.AppendLine("Stage by stage (each is a plain `finealign` command):").AppendLine().AppendLine("```sh");
            foreach (var c in ctx.Commands) sb.AppendLine(c);
            sb.AppendLine("```").AppendLine();
        }
        if (ctx.TensorBoardDir is not null) sb.AppendLine($"TensorBoard: `tensorboard --logdir {ctx.TensorBoardDir}`").AppendLine();
        if (ctx.Timings.Count > 0)
        {
            sb.AppendLine("| stage | seconds |").AppendLine("|---|---:|");
            foreach (var (stage, secs) in ctx.Timings) sb.AppendLine($"| {stage} | {secs.ToString("F0", Inv)} |");
            sb.AppendLine($"| **total** | **{ctx.Timings.Sum(t => t.Seconds).ToString("F0", Inv)}** |").AppendLine();
        }
        return sb.ToString();
    }

    private static List<(string Prompt, List<(string Run, EvalSample Sample)> Answers)> SampleGroups(IReadOnlyList<RunEvaluation> runs)
    {
        var prompts = runs.SelectMany(r => r.Samples.Select(s => s.Prompt)).Distinct().Take(3).ToList();
        return prompts.Select(p => (p, runs.Where(r => r.Samples.Any(s => s.Prompt == p))
            .Select(r => (r.Name, r.Samples.First(s => s.Prompt == p))).ToList())).ToList();
    }

    public static string Html(IReadOnlyList<RunEvaluation> runs, ReportContext ctx, string plotDir)
    {
        string E(string s) => WebUtility.HtmlEncode(s);
        string Img(string file, string alt) =>
            $"<img alt=\"{E(alt)}\" src=\"data:image/png;base64,{Convert.ToBase64String(File.ReadAllBytes(Path.Combine(plotDir, file)))}\">";
        var sb = new StringBuilder();
        sb.AppendLine("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">");
        sb.AppendLine($"<title>{E(ctx.Title)}</title><style>");
        sb.AppendLine("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}" +
                      "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}th{background:#f3f3f3}" +
                      "td.n{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow-x:auto}" +
                      "code{background:#f6f6f6}");
        sb.AppendLine("</style></head><body>");
        sb.AppendLine($"<h1>{E(ctx.Title)}</h1><p>Evaluation: {E(SettingsLine(runs[0].Settings).Replace("`", "", StringComparison.Ordinal))}</p>");
        var rows = TableRows(runs);
        sb.Append("<table><tr>");
        foreach (var h in rows[0]) sb.Append($"<th>{E(h)}</th>");
        sb.AppendLine("</tr>");
        foreach (var row in rows.Skip(1))
            sb.AppendLine("<tr>" + string.Concat(row.Select((c, i) => i < 3 ? $"<td>{E(c)}</td>" : $"<td class=\"n\">{E(c)}</td>")) + "</tr>");
        sb.AppendLine("</table><ul>");
        foreach (var e in Explanations().Concat(ctx.Notes))
            sb.AppendLine($"<li>{System.Text.RegularExpressions.Regex.Replace(E(e), @"\*\*(.+?)\*\*", "<b>$1</b>")}</li>");
        sb.AppendLine("</ul>");
        sb.AppendLine(Img(StepPlotFile, "true reward vs training progress"));
        sb.AppendLine(Img(KlPlotFile, "true reward vs KL to the base model"));
        sb.AppendLine("<h2>Samples (held-out prompts, one sample each, final policies)</h2>");
        foreach (var (prompt, answers) in SampleGroups(runs))
        {
            sb.AppendLine($"<p><b>Prompt:</b> <code>{E(prompt)}</code></p><table><tr><th>run</th><th>response</th><th>true reward</th></tr>");
            foreach (var (run, s) in answers)
                sb.AppendLine($"<tr><td>{E(run)}</td><td>{E(s.Response)}</td><td class=\"n\">{s.TrueReward.ToString("F2", Inv)}</td></tr>");
            sb.AppendLine("</table>");
        }
        sb.AppendLine("<h2>Reproduce</h2>");
        if (ctx.ReproduceCommand.Length > 0) sb.AppendLine($"<pre>{E(ctx.ReproduceCommand)}</pre>");
        if (ctx.Commands.Count > 0) sb.AppendLine($"<p>Stage by stage:</p><pre>{E(string.Join("\n", ctx.Commands))}</pre>");
        if (ctx.TensorBoardDir is not null) sb.AppendLine($"<p>TensorBoard: <code>tensorboard --logdir {E(ctx.TensorBoardDir)}</code></p>");
        if (ctx.Timings.Count > 0)
        {
            sb.AppendLine("<table><tr><th>stage</th><th>seconds</th></tr>");
            foreach (var (stage, secs) in ctx.Timings) sb.AppendLine($"<tr><td>{E(stage)}</td><td class=\"n\">{secs.ToString("F0", Inv)}</td></tr>");
            sb.AppendLine($"<tr><th>total</th><th>{ctx.Timings.Sum(t => t.Seconds).ToString("F0", Inv)}</th></tr></table>");
        }
        sb.AppendLine("</body></html>");
        return sb.ToString();
    }

    /// <summary>
    /// True reward against training progress (fraction of each run's own steps, so a 20-batch PPO run and a 60-step
    /// DPO run share the axis; the legend gives the step counts). Best-of-n and the base model are horizontal lines.
    /// </summary>
    public static void RewardVsStepPlot(IReadOnlyList<RunEvaluation> runs, string pngPath)
    {
        var plot = new ScottPlot.Plot();
        foreach (var r in runs.Where(r => r.XAxis == "step" && !r.IsBase && r.Curve.Count > 0))
        {
            double last = Math.Max(1, r.Curve[^1].X);
            var s = plot.Add.Scatter(r.Curve.Select(p => p.X / last).ToArray(), r.Curve.Select(p => p.TrueReward).ToArray());
            s.LegendText = $"{r.Name} ({r.Curve[^1].X.ToString("F0", Inv)} steps)";
            s.MarkerSize = 6;
            s.LineWidth = 2;
        }
        foreach (var r in runs.Where(r => r.IsBase || r.XAxis != "step"))
        {
            var h = plot.Add.HorizontalLine(r.Final.TrueReward);
            h.LinePattern = ScottPlot.LinePattern.Dashed;
            h.LegendText = r.IsBase ? $"{r.Name} (base)" : $"{r.Name} (n = {r.Final.X.ToString("F0", Inv)}, no training)";
        }
        plot.Title("True reward of held-out responses during training");
        plot.XLabel("training progress (fraction of the run's steps)");
        plot.YLabel("true reward (mean word valence)");
        plot.ShowLegend(ScottPlot.Alignment.UpperLeft);
        Save(plot, pngPath);
    }

    /// <summary>True reward against KL to the base model: each run's checkpoints in order, best-of-n over n.</summary>
    public static void RewardVsKlPlot(IReadOnlyList<RunEvaluation> runs, string pngPath)
    {
        var plot = new ScottPlot.Plot();
        foreach (var r in runs.Where(r => !r.IsBase && r.Curve.Count > 0))
        {
            var s = plot.Add.Scatter(r.Curve.Select(p => p.Kl).ToArray(), r.Curve.Select(p => p.TrueReward).ToArray());
            s.LegendText = r.AnalyticKl ? $"{r.Name} (n = {string.Join(",", r.Curve.Select(p => p.X.ToString("F0", Inv)))}; KL bound)" : r.Name;
            s.MarkerSize = 6;
            s.LineWidth = 2;
            if (r.AnalyticKl) s.LinePattern = ScottPlot.LinePattern.Dotted;
        }
        if (Base(runs) is { } b)
        {
            var m = plot.Add.Marker(0, b.Final.TrueReward);
            m.LegendText = $"{b.Name} (base)";
            m.Size = 10;
        }
        plot.Title("True reward vs KL to the base model");
        plot.XLabel("KL(π ‖ π_base) per response (nats)");
        plot.YLabel("true reward (mean word valence)");
        plot.ShowLegend(ScottPlot.Alignment.LowerRight);
        Save(plot, pngPath);
    }

    private static void Save(ScottPlot.Plot plot, string pngPath)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(pngPath));
        if (dir is not null) Directory.CreateDirectory(dir);
        plot.SavePng(pngPath, 900, 560);
    }
}
