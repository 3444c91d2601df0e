namespace FineAlign.Training;

/// <summary>PNG charts of a run's metrics (ScottPlot 5).</summary>
public static class Plots
{
    /// <summary>
    /// Train loss ("loss") and eval loss ("eval/loss") against "step" from a log history
    /// (the metrics.jsonl entries), saved as a PNG. <paramref name="lossUnit"/> labels the y axis: what one unit of this
    /// objective is (nats per token for language modelling, nats per pair for Bradley–Terry/DPO, …).
    /// </summary>
    public static void LossCurve(IEnumerable<IReadOnlyDictionary<string, double>> history, string pngPath,
                                 string title = "Loss", int width = 900, int height = 540, string lossUnit = LossUnits.NatsPerToken)
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
        plot.YLabel($"loss ({lossUnit})");
        // Loss curves fall, so the upper right corner is usually empty.
        if (tx.Length + ex.Length > 0) plot.ShowLegend(ScottPlot.Alignment.UpperRight);
        var dir = Path.GetDirectoryName(Path.GetFullPath(pngPath));
        if (dir is not null) Directory.CreateDirectory(dir);
        plot.SavePng(pngPath, width, height);
    }
}

/// <summary>Units of the training objectives, for the y axis of their loss curves.</summary>
public static class LossUnits
{
    /// <summary>Causal-LM cross-entropy (pretrain, SFT, TLCR's token classification): mean −log p per target token.</summary>
    public const string NatsPerToken = "nats/token";
    /// <summary>Bradley–Terry reward model and DPO: mean −log σ(margin) per preference pair.</summary>
    public const string NatsPerPair = "nats/pair";
    /// <summary>BCO: binary cross-entropy −log σ(±(r − δ)) per thumbs-up/down example.</summary>
    public const string NatsPerExample = "nats/example";
    /// <summary>KTO: λ(1 − σ(·)) per example — a weighted probability, not a log-loss.</summary>
    public const string KtoValue = "λ·(1 − σ) per example, 0 … λ";
}
