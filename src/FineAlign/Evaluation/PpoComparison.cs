using System.Globalization;
using System.Text;

namespace FineAlign.Evaluation;

/// <summary>One row of the PPO comparison: a reward variant, its final eval and its training curve.</summary>
public sealed record PpoVariantResult(string Name, string Reward, SentimentEvalResult Eval, double FinalScore, double FinalKl,
    IReadOnlyList<(double Step, double TrueReward)> Curve, double Seconds);

/// <summary>The side-by-side table and plot of <c>finealign ppo-compare</c>.</summary>
public static class PpoComparison
{
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
