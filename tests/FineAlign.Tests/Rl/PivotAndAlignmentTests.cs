using FineAlign.Rewards;
using TorchSharp;
using static TorchSharp.torch;
using static FineAlign.Tests.Rl.RlTensors;

namespace FineAlign.Tests.Rl;

public class PivotSegmentsTests
{
    private static readonly float[] Pattern = { 1, 2, -1, 3, 1, -2, -2, -1 };

    [Fact]
    public void PivotsWhereTheSignTurns()
    {
        var s = PivotSegments.Split(Pattern);
        Assert.Equal(new[] { (0, 2), (2, 1), (3, 2), (5, 3) }, s.Select(x => (x.Start, x.Length)));
        Assert.Equal(new[] { 1.5f, -1f, 2f, -5f / 3 }, s.Select(x => x.Score), new FloatTolerance());
    }

    [Fact]
    public void ShortRunsJoinThePreviousSegment()
    {
        // The lone −1 joins [1, 2]; the following [3, 1] has the same sign and merges too.
        var s = PivotSegments.Split(Pattern, new PivotOptions { MinSegmentLength = 2 });
        Assert.Equal(new[] { (0, 5), (5, 3) }, s.Select(x => (x.Start, x.Length)));
        Assert.Equal(new[] { 6f / 5, -5f / 3 }, s.Select(x => x.Score), new FloatTolerance());
        // A short first run joins the next one.
        var first = PivotSegments.Split(new float[] { -1, 2, 2, -3, -3 }, new PivotOptions { MinSegmentLength = 2 });
        Assert.Equal(new[] { (0, 3), (3, 2) }, first.Select(x => (x.Start, x.Length)));
    }

    [Fact]
    public void ZerosContinueTheCurrentSegmentAndSmoothingRemovesBlips()
    {
        var z = PivotSegments.Split(new float[] { 0, 1, 0, -1, 0 });
        Assert.Equal(new[] { (0, 3), (3, 2) }, z.Select(x => (x.Start, x.Length)));
        // Window 3 over [1, −0.2, 1, −3, −3] → [0.4, 0.6, −0.733, −1.667, −3]: one pivot at index 2.
        var x = new float[] { 1, -0.2f, 1, -3, -3 };
        Assert.Equal(4, PivotSegments.Split(x).Count);
        var s = PivotSegments.Split(x, new PivotOptions { SmoothingWindow = 3 });
        Assert.Equal(new[] { (0, 2), (2, 3) }, s.Select(v => (v.Start, v.Length)));
        Assert.Equal(new[] { 0.4f, -5f / 3 }, s.Select(v => v.Score), new FloatTolerance()); // scores use the raw r_t
    }

    [Fact]
    public void AgreementMaskAndSegmentScoresOnAPaddedBatch()
    {
        // Row 0: the pattern, label +1 (chosen). Row 1: left padding then [−1, −2, 2], label −1 (rejected);
        // with minimum length 2 its lone 2 joins [−1, −2] → one segment of mean −1/3, which agrees with −1.
        var r = F(Pattern.Concat(new float[] { 9, 9, 9, 9, 9, -1, -2, 2 }).ToArray(), 2, 8);
        var mask = Mask(new[] { 1, 1, 1, 1, 1, 1, 1, 1 }, new[] { 0, 0, 0, 0, 0, 1, 1, 1 });
        var labels = F(new[] { 1f, -1 }, 2);
        var o = new PivotOptions { MinSegmentLength = 2 };
        Near(new double[] { 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1 }, PivotSegments.AgreementMask(r, mask, labels, o));
        Near(new double[] { 1.2, 1.2, 1.2, 1.2, 1.2, -5.0 / 3, -5.0 / 3, -5.0 / 3, 0, 0, 0, 0, 0, -1.0 / 3, -1.0 / 3, -1.0 / 3 },
            PivotSegments.SegmentScores(r, mask, o));
        // Without a minimum the 2 is its own segment and disagrees with the label.
        Near(new double[] { 1.5, 1.5, -1, 2, 2, -5.0 / 3, -5.0 / 3, -5.0 / 3, 0, 0, 0, 0, 0, -1.5, -1.5, 2 },
            PivotSegments.SegmentScores(r, mask));
        Near(new double[] { 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0 }, PivotSegments.AgreementMask(r, mask, labels));
        Assert.Throws<FineAlignException>(() => PivotSegments.AgreementMask(r, mask, F(new[] { 1f, 0 }, 2)));
    }

    [Fact]
    public void SegmentSourceAndImplicitRewards()
    {
        // β(log π − log π_ref) = 0.5·[ln 2, ln 2, −ln 4] on row 0; row 1's padding is ignored.
        var logp = F(new[] { Ln(0.5), Ln(0.5), Ln(0.1), Ln(0.5), 5f, 5f }, 2, 3);
        var refLogp = F(new[] { Ln(0.25), Ln(0.25), Ln(0.4), Ln(0.25), -5f, -5f }, 2, 3);
        var mask = Mask(new[] { 1, 1, 1 }, new[] { 1, 0, 0 });
        var r = PivotSegments.ImplicitTokenRewards(logp, refLogp, mask, 0.5);
        double h = 0.5 * Math.Log(2);
        Near(new[] { h, h, -2 * h, h, 0, 0 }, r);

        // The wrapping source gives each token its segment mean: [h, h] then [−2h]; row 1 alone: [h].
        var batch = new RewardBatch(zeros(2, 3, dtype: ScalarType.Int64), mask);
        var inner = new TlcrReward("tlcr", _ => F(new[] { 0.9f, 0.7f, 0.2f, 0.6f, 0, 0 }, 2, 3));
        using var seg = new PivotSegmentRewardSource("segments", inner).Compute(batch);
        Near(new[] { 0.6, 0.6, -0.6, 0.2, 0, 0 }, seg.Values); // TLCR r = [0.8, 0.4, −0.6] → segment means
        Assert.Equal(0.6 + 0.6 - 0.6 + 0.2, 2 * seg.Metrics["rewards/segments"], 5);
    }

    private sealed class FloatTolerance : IEqualityComparer<float>
    {
        public bool Equals(float a, float b) => Math.Abs(a - b) < 1e-5;
        public int GetHashCode(float x) => 0;
    }
}

public class TokenAlignmentTests
{
    private static (sbyte[] O, sbyte[] R, int D) Align(int[] o, int[] r)
    {
        var a = TokenAlignment.Align(o, r);
        return (a.OriginalLabels, a.RevisedLabels, a.Distance);
    }

    [Fact]
    public void IdenticalPairIsAllNeutral()
    {
        var (o, r, d) = Align(new[] { 1, 2, 3 }, new[] { 1, 2, 3 });
        Assert.Equal(new sbyte[] { 0, 0, 0 }, o);
        Assert.Equal(new sbyte[] { 0, 0, 0 }, r);
        Assert.Equal(0, d);
    }

    [Fact]
    public void EmptySides()
    {
        var (o, r, d) = Align(new[] { 4, 5 }, Array.Empty<int>());
        Assert.Equal(new sbyte[] { -1, -1 }, o);
        Assert.Empty(r);
        Assert.Equal(2, d);
        var (o2, r2, d2) = Align(Array.Empty<int>(), new[] { 4, 5, 6 });
        Assert.Empty(o2);
        Assert.Equal(new sbyte[] { 1, 1, 1 }, r2);
        Assert.Equal(3, d2);
    }

    [Fact]
    public void InsertionsAtBothEnds()
    {
        var (o, r, d) = Align(new[] { 2, 3 }, new[] { 1, 2, 3, 4 });
        Assert.Equal(new sbyte[] { 0, 0 }, o);
        Assert.Equal(new sbyte[] { 1, 0, 0, 1 }, r);
        Assert.Equal(2, d);
    }

    [Fact]
    public void OneSubstitutionInTheMiddle()
    {
        var (o, r, d) = Align(new[] { 1, 2, 3, 4, 5 }, new[] { 1, 2, 9, 4, 5 });
        Assert.Equal(new sbyte[] { 0, 0, -1, 0, 0 }, o);
        Assert.Equal(new sbyte[] { 0, 0, 1, 0, 0 }, r);
        Assert.Equal(1, d);
    }

    [Fact]
    public void RepeatedTokensFollowTheDocumentedTieBreak()
    {
        // Among equal-cost alignments the last copies are matched: the first x is the deleted one.
        var (o, r, d) = Align(new[] { 7, 7, 7 }, new[] { 7, 7 });
        Assert.Equal(new sbyte[] { -1, 0, 0 }, o);
        Assert.Equal(new sbyte[] { 0, 0 }, r);
        Assert.Equal(1, d);
        var (o2, r2, _) = Align(new[] { 7 }, new[] { 7, 7, 7 });
        Assert.Equal(new sbyte[] { 0 }, o2);
        Assert.Equal(new sbyte[] { 1, 1, 0 }, r2);
        // a b a → b a b: distance 2 either as (delete first a, append b) or (prepend b, delete last a).
        // At the last cell deleting the final a ties with inserting the final b; delete wins.
        var (o3, r3, d3) = Align(new[] { 1, 2, 1 }, new[] { 2, 1, 2 });
        Assert.Equal(2, d3);
        Assert.Equal(new sbyte[] { 0, 0, -1 }, o3);
        Assert.Equal(new sbyte[] { 1, 0, 0 }, r3);
    }

    [Fact]
    public void LabelCountsAgreeWithTheDistanceOnLongerSequences()
    {
        // Each edit marks one side (delete/insert) or both (substitute): #orig(−1) ≤ D, #rev(+1) ≤ D, and
        // at least D edits are visible. Also checks a 2000 × 2000 alignment runs fast.
        var rng = new Random(3);
        var a = Enumerable.Range(0, 2000).Select(_ => rng.Next(50)).ToArray();
        var b = a.Where((_, i) => i % 97 != 0).Select((x, i) => i % 131 == 0 ? x + 100 : x).ToArray();
        var res = TokenAlignment.Align(a, b);
        int neg = res.OriginalLabels.Count(x => x == -1), pos = res.RevisedLabels.Count(x => x == 1);
        Assert.True(neg <= res.Distance && pos <= res.Distance);
        Assert.True(Math.Max(neg, pos) <= res.Distance && neg + pos >= res.Distance);
        Assert.Equal(a.Length - neg, b.Length - pos); // kept tokens pair up one to one
        Assert.InRange(res.Distance, 1, 21 + 16);
    }
}
