using FineAlign.Objectives;
using static FineAlign.Tests.Objectives.T;

namespace FineAlign.Tests.Objectives;

public class BradleyTerryLossTests
{
    // r_w = [1.5, 0.2], r_l = [0.5, 0.7] ⇒ d = r_w − r_l = [1, −0.5]
    // −log σ(1) = log(1 + e^−1) = 0.3132617; −log σ(−0.5) = log(1 + e^0.5) = 0.9740770; mean 0.6436693.

    [Fact]
    public void HandWorkedLossAndMetrics()
    {
        var r = BradleyTerryLoss.Compute(V(1.5f, 0.2f), V(0.5f, 0.7f));
        var losses = Values(r.Losses);
        Assert.Equal(0.3132617, losses[0], 5);
        Assert.Equal(0.9740770, losses[1], 5);
        Assert.Equal(0.6436693, r.Loss.item<float>(), 5);
        Keys(r.Metrics, "accuracy", "margin");
        Assert.Equal(0.5, r.Metrics["accuracy"], 6);       // only the first pair is ranked right
        Assert.Equal(0.25, r.Metrics["margin"], 6);        // (1 − 0.5) / 2
    }

    [Fact]
    public void MarginAndCentringTerm()
    {
        // m = [0.5, 0]: −log σ(1 − 0.5) = 0.4740770, second unchanged 0.9740770.
        // c = 0.01: c(r_w + r_l)² = 0.01·[2², 0.9²] = [0.04, 0.0081] ⇒ mean (0.5140770 + 0.9821770)/2 = 0.7481270.
        var m = BradleyTerryLoss.Compute(V(1.5f, 0.2f), V(0.5f, 0.7f), margin: V(0.5f, 0f));
        Assert.Equal(0.4740770, Values(m.Losses)[0], 5);
        var mc = BradleyTerryLoss.Compute(V(1.5f, 0.2f), V(0.5f, 0.7f), margin: V(0.5f, 0f), centerCoefficient: 0.01);
        Assert.Equal(0.7481270, mc.Loss.item<float>(), 5);
        // The margin does not change the accuracy metric (it is about the rewards themselves).
        Assert.Equal(0.5, mc.Metrics["accuracy"], 6);
    }

    [Fact]
    public void GradientRaisesChosenAndLowersRejected()
    {
        // dL/dr_w = −σ(−d)/B: for d = 1, −σ(−1)/2 = −0.1344707.
        var rw = G(1.5f, 0.2f); var rl = G(0.5f, 0.7f);
        BradleyTerryLoss.Compute(rw, rl).Loss.backward();
        Assert.Equal(-0.1344707, Grad(rw)[0], 5);
        Assert.All(Grad(rw), g => Assert.True(g < 0));
        Assert.All(Grad(rl), g => Assert.True(g > 0));
    }

    [Fact]
    public void ExtremeRewardsStayFinite()
    {
        // log(sigmoid(−200)) underflows to log 0 = −inf in fp32; logsigmoid gives −200 exactly.
        var r = BradleyTerryLoss.Compute(V(-100f), V(100f));
        Assert.Equal(200.0, r.Loss.item<float>(), 3);
    }

    [Fact]
    public void RejectsMismatchedBatches()
    {
        Assert.Throws<FineAlignException>(() => BradleyTerryLoss.Compute(V(1, 2), V(1)));
        Assert.Throws<FineAlignException>(() => BradleyTerryLoss.Compute(V(1, 2), V(1, 2), centerCoefficient: -1));
    }
}
