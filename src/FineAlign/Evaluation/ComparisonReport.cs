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
            if (!r.Settings.ComparableTo(settings))
                throw new FineAlignException($"run '{r.Name}' was evaluated with other settings ({r.Settings}) than '{runs[0].Name}' ({settings}); re-evaluate them together");
        Directory.CreateDirectory(outDir);
        RewardVsStepPlot(runs, Path.Combine(outDir, StepPlotFile));
        RewardVsKlPlot(runs, Path.Combine(outDir, KlPlotFile));
        AtomicFile.WriteAllText(Path.Combine(outDir, JsonFile), JsonSerializer.Serialize(new
        {
            settings,
            reward = runs[0].RewardLabel,
            runs = runs.Select(r => new
            {
                r.Name, r.Method, r.Signal, r.Seed, r.IsBase, r.AnalyticKl, r.XAxis, final = r.Final, curve = r.Curve,
                reward_at_kl = EqualKl.DefaultLevels.ToDictionary(k => k.ToString(Inv), k => EqualKl.RewardAt(r.Curve, k)),
            }),
            methods = MethodSummary.Group(runs).Select(m => new
            {
                m.Name, m.Method, runs = m.Runs.Count, reward = m.Reward, kl = m.Kl, base_logprob = m.BaseLogProb,
                corpus_word_share = m.CorpusWordShare, well_formed_share = m.WellFormedShare, reward_well_formed = m.RewardWellFormed,
                reward_at_kl = EqualKl.DefaultLevels.ToDictionary(k => k.ToString(Inv), k => m.RewardAtKl(k)),
                metrics = EvalReward.SplitMetrics(settings.Metrics).Select(x => EvalReward.SplitName(x)).Select(x => x.Name ?? x.Spec)
                    .ToDictionary(l => l, l => m.Metric(l)),
            }),
        }, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
        string md = Path.Combine(outDir, MarkdownFile);
        AtomicFile.WriteAllText(md, Markdown(runs, context));
        AtomicFile.WriteAllText(Path.Combine(outDir, HtmlFile), Html(runs, context, outDir));
        return md;
    }

    private static RunEvaluation? Base(IReadOnlyList<RunEvaluation> runs) => runs.FirstOrDefault(r => r.IsBase);

    /// <summary>
    /// Header + one row per run (or, when several runs share a name — seeds of one method — one row per method with
    /// mean ± 95 % interval over them); the same seed gives the same table. Corpus fluency columns appear only for an
    /// evaluation on the built-in corpus; the reward column is named after the reward the evaluation used.
    /// </summary>
    public static IReadOnlyList<string[]> TableRows(IReadOnlyList<RunEvaluation> runs)
    {
        var groups = MethodSummary.Group(runs);
        bool seeds = groups.Any(g => g.Runs.Count > 1);
        bool corpus = runs[0].Settings.OnBuiltinCorpus;
        string label = runs[0].RewardLabel;
        var b = groups.FirstOrDefault(g => g.IsBase);
        var header = new List<string>
        {
            "run", "method", "reward signal", seeds ? $"{label} (mean ± 95 % CI)" : $"{label} ± s.e.", "Δ vs base", "KL to base (nats)",
        };
        header.AddRange(EqualKl.DefaultLevels.Select(k => $"{label} @ KL {k.ToString(Inv)}"));
        if (corpus) header.AddRange(["corpus words", "well-formed", $"{label} (well-formed)"]);
        var metricLabels = runs.SelectMany(r => r.Final.Metrics?.Keys ?? Enumerable.Empty<string>()).Distinct().ToList();
        header.AddRange(metricLabels);
        header.AddRange(["base log-prob / token (ppl)", "distinct-1", "distinct-2", "mean length"]);
        var rows = new List<string[]> { header.ToArray() };
        string F3(double v) => v.ToString("F3", Inv);
        string Pm(SeedMean m) => m.N > 1 ? $"{F3(m.Mean)} ± {F3(m.HalfWidth)}" : F3(m.Mean);
        string Pct(SeedMean? m) => m is { } x ? (100 * x.Mean).ToString("F1", Inv) + " %" + (x.N > 1 ? $" ± {(100 * x.HalfWidth).ToString("F1", Inv)}" : "") : "—";
        foreach (var g in groups)
        {
            var f = g.Runs[0].Final;
            var reward = g.Reward;
            string value = seeds ? Pm(reward) + (g.Runs.Count > 1 ? $" (n = {g.Runs.Count})" : "") : $"{F3(f.Reward)} ± {F3(f.RewardSe)}";
            string delta = b is null || g.IsBase ? "—" : (reward.Mean - b.Reward.Mean).ToString("+0.000;-0.000;0.000", Inv);
            string kl = g.IsBase ? "0" : g.Kl.Mean.ToString("F2", Inv) + (g.AnalyticKl ? " (bound)" : "");
            var row = new List<string> { g.Name, g.Method, g.Signal, value, delta, kl };
            foreach (var k in EqualKl.DefaultLevels)
                row.Add(g.IsBase ? "—" : g.RewardAtKl(k) is { } at ? Pm(at) + (at.N < g.Runs.Count ? $" ({at.N}/{g.Runs.Count})" : "") : "not reached");
            if (corpus)
                row.AddRange([Pct(g.CorpusWordShare), Pct(g.WellFormedShare), g.RewardWellFormed is { } rw ? Pm(rw) : "—"]);
            foreach (var m in metricLabels) row.Add(g.Metric(m) is { } mv ? Pm(mv) : "—");
            row.AddRange([
                $"{g.BaseLogProb.Mean.ToString("F2", Inv)} ({Math.Exp(-g.BaseLogProb.Mean).ToString("F2", Inv)})",
                g.Distinct1.Mean.ToString("F3", Inv), g.Distinct2.Mean.ToString("F3", Inv), g.MeanLength.Mean.ToString("F1", Inv),
            ]);
            rows.Add(row.ToArray());
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

    private static string SettingsLine(RunEvaluation r)
    {
        var s = r.Settings;
        string prompts = s.PromptsFile is string file ? $"the first {s.Prompts} prompts of `{file}`"
            : $"{s.Prompts} held-out prompts of the built-in corpus (size {s.CorpusSize}, seed {s.CorpusSeed})";
        return $"{prompts} × {s.SamplesPerPrompt} samples, temperature 1, at most {s.MaxNewTokens} new tokens, evaluation seed {s.Seed}; " +
               $"base model `{s.BaseModel}`; reward: **{r.RewardLabel}**" +
               (s.UsesCorpusTruth ? " (the built-in corpus's ground truth)." : $" (`{s.Reward}`; the built-in corpus's ground truth is not shown).");
    }

    private static IEnumerable<string> Explanations(RunEvaluation first) =>
    [
        first.Settings.UsesCorpusTruth
            ? "**true reward**: the corpus generator's ground truth — mean valence of the words of the response (−1 … +1); no reward model sees it."
            : $"**{first.RewardLabel}**: Σ over the response's tokens of the reward `{first.Settings.Reward}` (a sequence reward: its one score).",
        $"**@ KL k**: the reward read off the run's checkpoint curve where its KL to the base first reaches k nats (linear interpolation; \"not reached\" if it never does): methods compared at equal KL.",
        "**KL to base**: KL(π ‖ π_base) per response, Monte-Carlo estimate Σ_t log π − log π_base over the sampled tokens (k1); for best-of-n the analytic bound log n − (n−1)/n.",
        "**base log-prob / token (ppl)**: fluency proxy — mean log-probability of the responses' tokens under the base model, and its perplexity (a reward hacked with broken text scores low here).",
        .. (first.Settings.OnBuiltinCorpus
            ? new[] { "**corpus words**: share of generated words the corpus grammar can write; **well-formed**: share of responses whose every sentence the grammar can write (the last one finished); the reward is also given over the well-formed responses only." }
            : []),
        .. EvalReward.SplitMetrics(first.Settings.Metrics).Select(spec => EvalReward.SplitName(spec) is var (name, rest)
            ? $"**{name ?? rest}**: mean over the responses of `{rest}` (an extra metric, scored like a reward but trained on by no method unless the signal column names it)." : ""),
        "**distinct-n**: distinct word n-grams / all word n-grams over all responses (lower = more repetitive); **mean length** in tokens.",
    ];

    public static string Markdown(IReadOnlyList<RunEvaluation> runs, ReportContext ctx)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"# {ctx.Title}").AppendLine();
        sb.AppendLine("Evaluation: " + SettingsLine(runs[0])).AppendLine();
        sb.Append(MarkdownTable(runs)).AppendLine();
        foreach (var e in Explanations(runs[0])) sb.AppendLine("- " + e);
        foreach (var n in ctx.Notes) sb.AppendLine("- " + n);
        sb.AppendLine();
        sb.AppendLine($"![{runs[0].RewardLabel} vs training progress]({StepPlotFile})").AppendLine();
        sb.AppendLine($"![{runs[0].RewardLabel} vs KL to the base model]({KlPlotFile})").AppendLine();
        sb.AppendLine("## Samples (held-out prompts, one sample each, final policies)").AppendLine();
        foreach (var (prompt, answers) in SampleGroups(runs))
        {
            sb.AppendLine($"**Prompt:** `{prompt.ReplaceLineEndings(" ")}`").AppendLine();
            sb.AppendLine($"| run | response | {runs[0].RewardLabel} |").AppendLine("|---|---|---:|");
            foreach (var (run, s) in answers)
                sb.AppendLine($"| {run} | {ShownText(s.Response).ReplaceLineEndings(" ").Replace("|", "\\|", StringComparison.Ordinal)} | {s.Reward.ToString("F2", Inv)} |");
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
            .DistinctBy(r => r.Name).Select(r => (r.Name, r.Samples.First(s => s.Prompt == p))).ToList())).ToList();   // one seed per method
    }

    /// <summary>Markdown emphasis and code spans of already HTML-encoded text as HTML (**b** → &lt;b&gt;, `c` → &lt;code&gt;).</summary>
    internal static string Inline(string encoded)
    {
        string s = System.Text.RegularExpressions.Regex.Replace(encoded, @"\*\*(.+?)\*\*", "<b>$1</b>");
        return System.Text.RegularExpressions.Regex.Replace(s, "`([^`]+)`", "<code>$1</code>");
    }

    /// <summary>Maximum characters of a sample shown in the report.</summary>
    public const int MaxShownChars = 400;

    /// <summary>
    /// A sample as shown: without the U+FFFD a response cut inside a UTF-8 character decodes to at its end, and cut
    /// to <see cref="MaxShownChars"/> at a character boundary (never between the halves of a surrogate pair) with "…".
    /// </summary>
    public static string ShownText(string text, int maxChars = MaxShownChars)
    {
        string t = text.TrimEnd('\uFFFD');
        if (t.Length <= maxChars) return t;
        int cut = maxChars;
        if (char.IsLowSurrogate(t[cut]) && cut > 0) cut--;
        return t[..cut] + "…";
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
        sb.AppendLine($"<h1>{E(ctx.Title)}</h1><p>Evaluation: {Inline(E(SettingsLine(runs[0])))}</p>");
        var rows = TableRows(runs);
        sb.Append("<table><tr>");
        foreach (var h in rows[0]) sb.Append($"<th>{E(h)}</th>");
        sb.AppendLine("</tr>");
        foreach (var row in rows.Skip(1))
            sb.AppendLine("<tr>" + string.Concat(row.Select((c, i) => i < 3 ? $"<td>{E(c)}</td>" : $"<td class=\"n\">{E(c)}</td>")) + "</tr>");
        sb.AppendLine("</table><ul>");
        foreach (var e in Explanations(runs[0]).Concat(ctx.Notes))
            sb.AppendLine($"<li>{Inline(E(e))}</li>");
        sb.AppendLine("</ul>");
        sb.AppendLine(Img(StepPlotFile, $"{runs[0].RewardLabel} vs training progress"));
        sb.AppendLine(Img(KlPlotFile, $"{runs[0].RewardLabel} vs KL to the base model"));
        sb.AppendLine("<h2>Samples (held-out prompts, one sample each, final policies)</h2>");
        foreach (var (prompt, answers) in SampleGroups(runs))
        {
            sb.AppendLine($"<p><b>Prompt:</b> <q>{E(ShownText(prompt))}</q></p><table><tr><th>run</th><th>response</th><th>{E(runs[0].RewardLabel)}</th></tr>");
            foreach (var (run, s) in answers)
                sb.AppendLine($"<tr><td>{E(run)}</td><td>{E(ShownText(s.Response))}</td><td class=\"n\">{s.Reward.ToString("F2", Inv)}</td></tr>");
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
            var s = plot.Add.Scatter(r.Curve.Select(p => p.X / last).ToArray(), r.Curve.Select(p => p.Reward).ToArray());
            s.LegendText = $"{r.Name} ({r.Curve[^1].X.ToString("F0", Inv)} steps)";
            s.MarkerSize = 6;
            s.LineWidth = 2;
        }
        foreach (var r in runs.Where(r => r.IsBase || r.XAxis != "step"))
        {
            var h = plot.Add.HorizontalLine(r.Final.Reward);
            h.LinePattern = ScottPlot.LinePattern.Dashed;
            h.LegendText = r.IsBase ? $"{r.Name} (base)" : $"{r.Name} (n = {r.Final.X.ToString("F0", Inv)}, no training)";
        }
        plot.Title($"{Cap(runs[0].RewardLabel)} of held-out responses during training");
        plot.XLabel("training progress (fraction of the run's steps)");
        plot.YLabel(YLabel(runs[0]));
        plot.ShowLegend(ScottPlot.Alignment.UpperLeft);
        Save(plot, pngPath);
    }

    /// <summary>True reward against KL to the base model: each run's checkpoints in order, best-of-n over n.</summary>
    public static void RewardVsKlPlot(IReadOnlyList<RunEvaluation> runs, string pngPath)
    {
        var plot = new ScottPlot.Plot();
        foreach (var r in runs.Where(r => !r.IsBase && r.Curve.Count > 0))
        {
            var s = plot.Add.Scatter(r.Curve.Select(p => p.Kl).ToArray(), r.Curve.Select(p => p.Reward).ToArray());
            s.LegendText = r.AnalyticKl ? $"{r.Name} (n = {string.Join(",", r.Curve.Select(p => p.X.ToString("F0", Inv)))}; KL bound)" : r.Name;
            s.MarkerSize = 6;
            s.LineWidth = 2;
            if (r.AnalyticKl) s.LinePattern = ScottPlot.LinePattern.Dotted;
        }
        if (Base(runs) is { } b)
        {
            var m = plot.Add.Marker(0, b.Final.Reward);
            m.LegendText = $"{b.Name} (base)";
            m.Size = 10;
        }
        plot.Title($"{Cap(runs[0].RewardLabel)} vs KL to the base model");
        plot.XLabel("KL(π ‖ π_base) per response (nats)");
        plot.YLabel(YLabel(runs[0]));
        plot.ShowLegend(ScottPlot.Alignment.LowerRight);
        Save(plot, pngPath);
    }

    private static string Cap(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..];

    private static string YLabel(RunEvaluation r) => r.Settings.UsesCorpusTruth ? "true reward (mean word valence)" : $"{r.RewardLabel} (Σ over response tokens)";

    private static void Save(ScottPlot.Plot plot, string pngPath)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(pngPath));
        if (dir is not null) Directory.CreateDirectory(dir);
        plot.SavePng(pngPath, 900, 560);
    }
}
