namespace FineAlign.Evaluation;

/// <summary>
/// Comparing methods at equal KL: each run's reward read off its checkpoint curve (reward against KL to the base, in
/// training order) by linear interpolation, so a method that spent 10 nats is also seen at the 1, 2 and 5 nats where
/// the others stopped.
/// </summary>
public static class EqualKl
{
    /// <summary>The KL values (nats) at which reports read every curve.</summary>
    public static readonly double[] DefaultLevels = [1, 2, 5];

    /// <summary>
    /// The reward where the curve first reaches KL <paramref name="kl"/>: linear between the two consecutive points
    /// whose KLs bracket it (training order, so a curve that goes out and back is read on its way out); null when the
    /// curve never reaches that KL (no extrapolation).
    /// </summary>
    public static double? RewardAt(IReadOnlyList<EvalPoint> curve, double kl)
    {
        for (int i = 0; i < curve.Count; i++)
        {
            if (curve[i].Kl == kl) return curve[i].Reward;
            if (i == 0) continue;
            double k0 = curve[i - 1].Kl, k1 = curve[i].Kl;
            if ((k0 < kl && kl < k1) || (k1 < kl && kl < k0))
            {
                double f = (kl - k0) / (k1 - k0);
                return curve[i - 1].Reward + f * (curve[i].Reward - curve[i - 1].Reward);
            }
        }
        return null;
    }
}

/// <summary>Mean and 95 % interval of one quantity over a method's runs (seeds).</summary>
public readonly record struct SeedMean(double Mean, double HalfWidth, int N)
{
    /// <summary>Mean ± t_{0.975, n−1} · s / √n (Student's t; half-width 0 for one run).</summary>
    public static SeedMean Of(IReadOnlyList<double> values)
    {
        if (values.Count == 0) return new SeedMean(double.NaN, 0, 0);
        double mean = values.Average();
        if (values.Count == 1) return new SeedMean(mean, 0, 1);
        double sd = Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / (values.Count - 1));
        return new SeedMean(mean, StudentT975(values.Count - 1) * sd / Math.Sqrt(values.Count), values.Count);
    }

    /// <summary>Two-sided 95 % quantile of Student's t with <paramref name="df"/> degrees of freedom.</summary>
    public static double StudentT975(int df)
    {
        double[] table = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
                          2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042];
        if (df < 1) throw new ArgumentOutOfRangeException(nameof(df));
        return df <= table.Length ? table[df - 1] : 1.96 + 2.4 / df;   // ≈ the normal quantile plus its 1/df correction
    }
}

/// <summary>
/// One row of a multi-seed table: the runs of one method (same run name, e.g. <c>dpo</c> under each seed's folder)
/// averaged, with their 95 % interval over seeds.
/// </summary>
public sealed record MethodSummary(string Name, string Method, string Signal, bool IsBase, bool AnalyticKl, IReadOnlyList<RunEvaluation> Runs)
{
    public SeedMean Reward => Over(r => r.Final.Reward);
    public SeedMean Kl => Over(r => r.Final.Kl);
    public SeedMean BaseLogProb => Over(r => r.Final.BaseLogProb);
    public SeedMean Distinct1 => Over(r => r.Final.Distinct1);
    public SeedMean Distinct2 => Over(r => r.Final.Distinct2);
    public SeedMean MeanLength => Over(r => r.Final.MeanLength);
    public SeedMean? CorpusWordShare => Optional(r => r.Final.CorpusWordShare);
    public SeedMean? WellFormedShare => Optional(r => r.Final.WellFormedShare);
    public SeedMean? RewardWellFormed => Optional(r => r.Final.RewardWellFormed);
    /// <summary>An extra metric of the evaluation (<see cref="EvalSettings.Metrics"/>) by label; null when no run has it.</summary>
    public SeedMean? Metric(string label) => Optional(r => r.Final.Metrics is { } m && m.TryGetValue(label, out double v) ? v : null);

    /// <summary>Reward at equal KL over the runs that reach it (N says how many did).</summary>
    public SeedMean? RewardAtKl(double kl) =>
        IsBase ? null : Runs.Select(r => EqualKl.RewardAt(r.Curve, kl)).OfType<double>().ToList() is { Count: > 0 } v ? SeedMean.Of(v) : null;

    private SeedMean Over(Func<RunEvaluation, double> f) => SeedMean.Of(Runs.Select(f).ToList());

    private SeedMean? Optional(Func<RunEvaluation, double?> f) =>
        Runs.Select(f).OfType<double>().ToList() is { Count: > 0 } v ? SeedMean.Of(v) : null;

    /// <summary>Groups runs by name, in order of first appearance.</summary>
    public static List<MethodSummary> Group(IReadOnlyList<RunEvaluation> runs) =>
        runs.GroupBy(r => r.Name).Select(g =>
        {
            var first = g.First();
            return new MethodSummary(g.Key, first.Method, first.Signal, first.IsBase, first.AnalyticKl, g.ToList());
        }).ToList();
}
