namespace FineAlign.Training;

/// <summary>PNG charts of a run's metrics (ScottPlot 5).</summary>
public static class Plots
{
    /// <summary>
    /// Train loss ("loss") and eval loss ("eval/loss") against "step" from a log history
    /// (the metrics.jsonl entries), saved as a PNG.
    /// </summary>
    public static void LossCurve(IEnumerable<IReadOnlyDictionary<string, double>> history, string pngPath,
                                 string title = "Loss", int width = 900, int height = 540)
    {
        var entries = history.ToList();
        (double[] xs, double[] ys) Series(string key)
        {
            var pts = entries.Where(e => e.ContainsKey("step") && e.TryGetValue(key, out var v) && double.IsFinite(v)).ToList();
            return (pts.Select(e => e["step"]).ToArray(), pts.Select(e => e[key]).ToArray());
        }

        var plot = new ScottPlot.Plot();
        var (tx, ty) = Series("loss");
        if (tx.Length > 0)
        {
            var train = plot.Add.Scatter(tx, ty);
            train.LegendText = "train loss";
            train.MarkerSize = tx.Length > 50 ? 0 : 4;
            train.LineWidth = 2;
        }
        var (ex, ey) = Series("eval/loss");
        if (ex.Length > 0)
        {
            var eval = plot.Add.Scatter(ex, ey);
            eval.LegendText = "eval loss";
            eval.MarkerSize = 6;
            eval.LineWidth = 2;
        }
        plot.Title(title);
        plot.XLabel("step");
        plot.YLabel("loss (nats/token)");
        // Loss curves fall, so the upper right corner is usually empty.
        if (tx.Length + ex.Length > 0) plot.ShowLegend(ScottPlot.Alignment.UpperRight);
        var dir = Path.GetDirectoryName(Path.GetFullPath(pngPath));
        if (dir is not null) Directory.CreateDirectory(dir);
        plot.SavePng(pngPath, width, height);
    }
}
