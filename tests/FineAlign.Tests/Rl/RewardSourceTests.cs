using FineAlign.Rewards;
using TorchSharp;
using static TorchSharp.torch;
using static FineAlign.Tests.Rl.RlTensors;

namespace FineAlign.Tests.Rl;

public class RewardSourceTests
{
    // Fixed batch B = 4, T = 4: right padding (row 0), full (row 1), one token (row 2), left padding (row 3).
    private static RewardBatch Batch() => new(
        tensor(new long[] { 5, 6, 7, 0, 7, 7, 8, 9, 4, 0, 0, 0, 0, 0, 3, 7 }, new long[] { 4, 4 }),
        Mask(new[] { 1, 1, 1, 0 }, new[] { 1, 1, 1, 1 }, new[] { 1, 0, 0, 0 }, new[] { 0, 0, 1, 1 }));

    [Fact]
    public void SequenceScoreLandsOnTheLastValidToken()
    {
        var src = new SequenceRewardSource("rm", _ => F(new[] { 2f, -1, 5, 3 }, 4));
        using var r = src.Compute(Batch());
        Near(new double[] { 0, 0, 2, 0, 0, 0, 0, -1, 5, 0, 0, 0, 0, 0, 0, 3 }, r.Values);
        Near(new double[] { 2, -1, 5, 3 }, r.SequenceTotals());
        Assert.Equal((2 - 1 + 5 + 3) / 4.0, r.Metrics["rewards/rm"], 5);
        Assert.Equal(new long[] { 2, 3, 0, 3 }, SequenceRewardSource.LastTokenIndex(Batch().ResponseMask).data<long>().ToArray());
        // A row without tokens has nowhere to put its score.
        Near(new double[] { 0, 0, 0, 4 }, SequenceRewardSource.PlaceOnLastToken(F(new[] { 9f, 4 }, 2), Mask(new[] { 0, 0 }, new[] { 0, 1 })));
    }

    [Fact]
    public void DiscreteLabelsBecomeTheTensorAndPaddingIsIgnored()
    {
        // Padding holds a 7 which is not a label: ignored and zeroed.
        var labels = F(new[] { 1f, -1, 0, 7, 0, 0, 1, -1, -1, 7, 7, 7, 7, 7, 1, 1 }, 4, 4);
        using var r = new DiscreteTokenRewardSource("labels", _ => labels).Compute(Batch());
        Near(new double[] { 1, -1, 0, 0, 0, 0, 1, -1, -1, 0, 0, 0, 0, 0, 1, 1 }, r.Values);
        var bad = F(new[] { 1f, 2, 0, 0, 0, 0, 1, -1, -1, 0, 0, 0, 0, 0, 1, 1 }, 4, 4);
        var e = Assert.Throws<FineAlignException>(() => new DiscreteTokenRewardSource("labels", _ => bad).Compute(Batch()));
        Assert.Contains("batch index 0", e.Message);
    }

    [Fact]
    public void TlcrMappingsAndAblations()
    {
        var p = F(new[] { 0.9f, 0.5f, 0.45f, 0.1f, 0.3f }, 1, 5);
        Near(new[] { 0.8, 0, -0.1, -0.8, -0.4 }, TlcrReward.FromProbabilities(p));
        // The released code: 2σ(2p − 1) − 1, which equals tanh(p − ½).
        var code = new[] { 0.9, 0.5, 0.45, 0.1, 0.3 }.Select(x => 2 / (1 + Math.Exp(-(2 * x - 1))) - 1).ToArray();
        Near(code, TlcrReward.FromProbabilities(p, new TlcrOptions { Mapping = TlcrMapping.Code }));
        Near(new[] { 0.8, 0, 0, -0.8, -0.4 }, TlcrReward.FromProbabilities(p, new TlcrOptions { DeadZone = true }));
        Near(new[] { 0.8, 0, 0, 0, 0 }, TlcrReward.FromProbabilities(p, new TlcrOptions { Sign = TlcrSign.PositiveOnly }));
        Near(new[] { 0, 0, -0.1, -0.8, -0.4 }, TlcrReward.FromProbabilities(p, new TlcrOptions { Sign = TlcrSign.NegativeOnly }));
        Near(new[] { 1.0, 0, -1, -1, -1 }, TlcrReward.FromProbabilities(p, new TlcrOptions { Mapping = TlcrMapping.Discrete }));
        Near(new[] { 0.5, 0, -0.1, -0.5, -0.4 }, TlcrReward.FromProbabilities(p, new TlcrOptions { Clip = 0.5 }));
    }

    [Fact]
    public void TlcrSourceIsDenseOverValidTokens()
    {
        var p = F(new[] { 0.9f, 0.5f, 0.1f, 99, 0.75f, 0.25f, 0.5f, 1, 0, -3, -3, -3, -3, -3, 0.6f, 0.4f }, 4, 4);
        using var r = new TlcrReward("tlcr", _ => p).Compute(Batch());
        Near(new[] { 0.8, 0, -0.8, 0, 0.5, -0.5, 0, 1, -1, 0, 0, 0, 0, 0, 0.2, -0.2 }, r.Values);
        var outOfRange = p.clone(); outOfRange[1, 2] = tensor(1.5f);
        var e = Assert.Throws<FineAlignException>(() => new TlcrReward("tlcr", _ => outOfRange).Compute(Batch()));
        Assert.Contains("batch index 1", e.Message);
    }

    [Fact]
    public void NaNOrInfNamesTheSourceAndTheBatchIndex()
    {
        var p = full(4, 4, 0.5f); p[2, 0] = tensor(float.NaN);
        var e = Assert.Throws<FineAlignException>(() => new TlcrReward("disc", _ => p).Compute(Batch()));
        Assert.Contains("'disc'", e.Message);
        Assert.Contains("batch index 2", e.Message);

        var e2 = Assert.Throws<FineAlignException>(() => new SequenceRewardSource("rm", _ => F(new[] { 0f, 0, 0, float.PositiveInfinity }, 4)).Compute(Batch()));
        Assert.Contains("'rm'", e2.Message);
        Assert.Contains("batch index 3", e2.Message);

        var e3 = Assert.Throws<FineAlignException>(() => ProgrammaticRewardSource.Sequence("len", x => x.Index == 1 ? double.NaN : 0).Compute(Batch()));
        Assert.Contains("batch index 1", e3.Message);

        // NaN on a padding position is not the source's fault: it is zeroed.
        var padNaN = full(4, 4, 0.5f); padNaN[0, 3] = tensor(float.NaN);
        using var ok = new TlcrReward("disc", _ => padNaN).Compute(Batch());
        Assert.Equal(0f, ok.Values.abs().sum().item<float>());
    }

    [Fact]
    public void ProgrammaticSourcesSeeOnlyValidTokens()
    {
        using var len = ProgrammaticRewardSource.Sequence("len", x => x.ResponseIds.Length).Compute(Batch());
        Near(new double[] { 0, 0, 3, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 2 }, len.Values);
        using var sevens = ProgrammaticRewardSource.Token("sevens", x => x.ResponseIds.Select(id => id == 7 ? 1f : 0f).ToArray()).Compute(Batch());
        Near(new double[] { 0, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 }, sevens.Values);
        var e = Assert.Throws<FineAlignException>(() => ProgrammaticRewardSource.Token("short", _ => new[] { 1f }).Compute(Batch()));
        Assert.Contains("batch index 0", e.Message);
    }

    [Fact]
    public void WeightedSumAddsComponentsAndLogsEach()
    {
        var rm = new SequenceRewardSource("rm", _ => F(new[] { 2f, -1, 5, 3 }, 4));
        var len = ProgrammaticRewardSource.Sequence("len", x => x.ResponseIds.Length);
        var sevens = ProgrammaticRewardSource.Token("sevens", x => x.ResponseIds.Select(id => id == 7 ? 1f : 0f).ToArray());
        using var r = new WeightedRewardSum("total", (rm, 1.0), (len, -0.5), (sevens, 2.0)).Compute(Batch());
        // Row 0: last token 2 − 1.5 + 2·1 (token 7 is the last) = 2.5; row 1: [2, 2, 0, −1 − 2]; row 2: 5 − 0.5; row 3: [0, 0, 0, 3 − 1 + 2].
        Near(new double[] { 0, 0, 2.5, 0, 2, 2, 0, -3, 4.5, 0, 0, 0, 0, 0, 0, 4 }, r.Values);
        Assert.Equal(9 / 4.0, r.Metrics["rewards/rm"], 5);
        Assert.Equal(10 / 4.0, r.Metrics["rewards/len"], 5);
        Assert.Equal(4 / 4.0, r.Metrics["rewards/sevens"], 5);
        Assert.Equal((2.5 + 1 + 4.5 + 4) / 4, r.Metrics["rewards/total"], 5);

        var e = Assert.Throws<FineAlignException>(() => new WeightedRewardSum("total", (rm, 1.0), (rm, 2.0)));
        Assert.Contains("'rm'", e.Message);
        var nanPart = new SequenceRewardSource("broken", _ => F(new[] { 0f, float.NaN, 0, 0 }, 4));
        var e2 = Assert.Throws<FineAlignException>(() => new WeightedRewardSum("total", (rm, 1.0), (nanPart, 1.0)).Compute(Batch()));
        Assert.Contains("'broken'", e2.Message);
    }

    [Fact]
    public void KlShapingIsTheOnePlaceForTheKlTerm()
    {
        using var task = new SequenceRewardSource("rm", _ => F(new[] { 2f, -1, 5, 3 }, 4)).Compute(Batch());
        var kl = full(4, 4, 0.2f); kl[0, 3] = tensor(float.NaN); // garbage on padding
        using var shaped = KlShaping.Apply(task, kl, 0.5);
        Near(new double[] { -0.1, -0.1, 1.9, 0, -0.1, -0.1, -0.1, -1.1, 4.9, 0, 0, 0, 0, 0, -0.1, 2.9 }, shaped.Values);
        Assert.Equal(task.Metrics["rewards/rm"], shaped.Metrics["rewards/rm"]);
    }
}
