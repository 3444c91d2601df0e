using FineAlign.Evaluation;

namespace FineAlign.Tests.Evaluation;

public class EqualKlTests
{
    private static EvalPoint P(double kl, double reward) => new(0, reward, 0, kl, 0, 0, 0);

    [Fact]
    public void RewardIsInterpolatedLinearlyBetweenTheCheckpointsThatBracketTheKl()
    {
        // Base (0, 0.1), then checkpoints at KL 0.5, 1.5, 4.0 with rewards 0.2, 0.4, 0.9.
        var curve = new[] { P(0, 0.1), P(0.5, 0.2), P(1.5, 0.4), P(4.0, 0.9) };
        Assert.Equal(0.3, EqualKl.RewardAt(curve, 1)!.Value, 12);          // halfway 0.5 → 1.5: 0.2 + 0.5·0.2
        Assert.Equal(0.5, EqualKl.RewardAt(curve, 2)!.Value, 12);          // 1.5 → 4.0, f = 0.2: 0.4 + 0.2·0.5
        Assert.Equal(0.4, EqualKl.RewardAt(curve, 1.5)!.Value, 12);        // exactly a checkpoint
        Assert.Null(EqualKl.RewardAt(curve, 5));                           // never reached: no extrapolation
    }

    [Fact]
    public void ACurveThatTurnsBackIsReadWhereItFirstReachesTheKl()
    {
        // KL goes 0 → 3 → 1: KL 2 is first crossed on the way out (reward 0 + 2/3 · 0.6 = 0.4), not on the way back.
        var curve = new[] { P(0, 0), P(3, 0.6), P(1, 0.9) };
        Assert.Equal(0.4, EqualKl.RewardAt(curve, 2)!.Value, 12);
    }

    [Fact]
    public void SeedMeanUsesStudentsTInterval()
    {
        // 1, 2, 3: mean 2, s = 1, t(0.975, 2) = 4.303 → half-width 4.303 / √3 = 2.4843.
        var m = SeedMean.Of([1, 2, 3]);
        Assert.Equal(2, m.Mean, 12);
        Assert.Equal(4.303 / Math.Sqrt(3), m.HalfWidth, 10);
        Assert.Equal(3, m.N);
        Assert.Equal(0, SeedMean.Of([5]).HalfWidth);
    }

    [Fact]
    public void SeveralSeedsOfAMethodBecomeOneRowWithTheirInterval()
    {
        var settings = new EvalSettings(8, 1, 16, 7, 400, 1234, "sft");
        RunEvaluation Run(string name, double reward, bool isBase = false) => new()
        {
            Name = name, Method = name, Settings = settings with { Seed = (long)(reward * 1000) }, IsBase = isBase,
            Curve = isBase ? [P(0, reward)] : [P(0, 0), P(2, reward)],
        };
        var runs = new[] { Run("sft", 0.0, true), Run("dpo", 0.2), Run("sft", 0.1, true), Run("dpo", 0.4) };
        var rows = ComparisonReport.TableRows(runs);
        Assert.Equal(3, rows.Count);                                            // header, sft, dpo
        Assert.Contains("95 % CI", rows[0][3]);
        Assert.StartsWith($"0.300 ± {(12.706 * Math.Sqrt(0.02) / Math.Sqrt(2)):F3} (n = 2)", rows[2][3]);
        Assert.Equal("+0.250", rows[2][4]);                                     // 0.30 − 0.05
        Assert.Equal($"0.150 ± {(12.706 * Math.Sqrt(0.005) / Math.Sqrt(2)):F3}", rows[2][6]);   // @ KL 1: halfway to 0.2 and 0.4
        Assert.Equal("not reached", rows[2][8]);                                // @ KL 5
    }
}
