using FineAlign.Objectives;
using static FineAlign.Tests.Objectives.T;

namespace FineAlign.Tests.Objectives;

public class DpoLossTests
{
    // One pair: π(y_w) = −10, π_ref(y_w) = −12 ⇒ Δ_w = 2; π(y_l) = −15, π_ref(y_l) = −14 ⇒ Δ_l = −1.
    // h = 3, β = 0.1 ⇒ βh = 0.3; log σ(0.3) = −0.5543552, log σ(−0.3) = −0.8543552.
    //  sigmoid:             −log σ(0.3)                          = 0.5543552
    //  conservative ε=0.1:  0.9·0.5543552 + 0.1·0.8543552        = 0.5843552
    //  robust ε=0.1:        (0.9·0.5543552 − 0.1·0.8543552)/0.8  = 0.5168552
    //  hinge:               max(0, 1 − 0.3)                      = 0.7
    //  ipo, |y_w|=4, |y_l|=2: h̄ = 2/4 − (−1)/2 = 1; (1 − 1/(2·0.1))² = (1 − 5)² = 16
    [Theory]
    [InlineData(DpoLossType.Sigmoid, 0.0, 0.5543552)]
    [InlineData(DpoLossType.Conservative, 0.1, 0.5843552)]
    [InlineData(DpoLossType.Conservative, 0.0, 0.5543552)]
    [InlineData(DpoLossType.Robust, 0.1, 0.5168552)]
    [InlineData(DpoLossType.Robust, 0.0, 0.5543552)]
    [InlineData(DpoLossType.Hinge, 0.0, 0.7)]
    [InlineData(DpoLossType.Ipo, 0.0, 16.0)]
    public void HandWorkedLossPerType(DpoLossType type, double eps, double expected)
    {
        var r = DpoLoss.Compute(V(-10), V(-15), V(-12), V(-14), beta: 0.1, lossType: type, labelSmoothing: eps,
                                chosenLengths: V(4), rejectedLengths: V(2));
        Assert.Equal(expected, r.Loss.item<float>(), 5);
        Assert.Equal(expected, Values(r.Losses)[0], 5);
    }

    [Theory]
    [InlineData(DpoLossType.Sigmoid, 0.0)]
    [InlineData(DpoLossType.Conservative, 0.1)]
    [InlineData(DpoLossType.Robust, 0.1)]
    [InlineData(DpoLossType.Hinge, 0.0)]
    [InlineData(DpoLossType.Ipo, 0.0)]
    public void GradientDescentRaisesChosenAndLowersRejected(DpoLossType type, double eps)
    {
        var pc = G(-10); var pr = G(-15); var rc = G(-12); var rr = G(-14);
        DpoLoss.Compute(pc, pr, rc, rr, lossType: type, labelSmoothing: eps, chosenLengths: V(4), rejectedLengths: V(2)).Loss.backward();
        Assert.True(Grad(pc)[0] < 0, $"{type}: dL/dlogπ(y_w) = {Grad(pc)[0]}");
        Assert.True(Grad(pr)[0] > 0, $"{type}: dL/dlogπ(y_l) = {Grad(pr)[0]}");
        Assert.Null(rc.grad); // the reference is a constant
        Assert.Null(rr.grad);
    }

    [Fact]
    public void ExactGradients()
    {
        // sigmoid: dL/dπ(y_w) = −β σ(−βh) = −0.1·σ(−0.3) = −0.0425557, and +0.0425557 for y_l.
        var pc = G(-10); var pr = G(-15);
        DpoLoss.Compute(pc, pr, V(-12), V(-14)).Loss.backward();
        Assert.Equal(-0.0425557, Grad(pc)[0], 6);
        Assert.Equal(0.0425557, Grad(pr)[0], 6);
        // ipo: dL/dπ(y_w) = 2(h̄ − 5)/|y_w| = 2·(−4)/4 = −2; dL/dπ(y_l) = −2(h̄ − 5)/|y_l| = 4.
        var qc = G(-10); var qr = G(-15);
        DpoLoss.Compute(qc, qr, V(-12), V(-14), lossType: DpoLossType.Ipo, chosenLengths: V(4), rejectedLengths: V(2)).Loss.backward();
        Assert.Equal(-2.0, Grad(qc)[0], 5);
        Assert.Equal(4.0, Grad(qr)[0], 5);
        // hinge beyond the margin (βh = 2 > 1): zero loss, zero gradient.
        var hc = G(0);
        var h = DpoLoss.Compute(hc, V(0), V(-10), V(10), lossType: DpoLossType.Hinge);
        h.Loss.backward();
        Assert.Equal(0.0, h.Loss.item<float>(), 6);
        Assert.Equal(0.0, Grad(hc)[0], 6);
    }

    [Fact]
    public void BatchMeanAndTrlMetrics()
    {
        // Pair 0 as above (Δ_w = 2, Δ_l = −1, h = 3); pair 1 wrong way round: π = (−20, −30), ref = (−19, −31)
        // ⇒ Δ_w = −1, Δ_l = 1, h = −2, loss −log σ(−0.2) = 0.7981389. Mean (0.5543552 + 0.7981389)/2 = 0.6762471.
        // rewards/chosen = 0.1·(2 − 1)/2 = 0.05; rewards/rejected = 0.1·(−1 + 1)/2 = 0; margins 0.05;
        // accuracies: margins are 0.3 and −0.2 ⇒ 0.5; logps/chosen = (−10 − 20)/2 = −15; logps/rejected = (−15 − 30)/2 = −22.5.
        var r = DpoLoss.Compute(V(-10, -20), V(-15, -30), V(-12, -19), V(-14, -31));
        Assert.Equal(0.6762471, r.Loss.item<float>(), 5);
        Assert.Equal(0.7981389, Values(r.Losses)[1], 5);
        Keys(r.Metrics, "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected");
        Assert.Equal(0.05, r.Metrics["rewards/chosen"], 5);
        Assert.Equal(0.0, r.Metrics["rewards/rejected"], 5);
        Assert.Equal(0.05, r.Metrics["rewards/margins"], 5);
        Assert.Equal(0.5, r.Metrics["rewards/accuracies"], 6);
        Assert.Equal(-15.0, r.Metrics["logps/chosen"], 5);
        Assert.Equal(-22.5, r.Metrics["logps/rejected"], 5);
    }

    [Fact]
    public void LargeMarginsStayFinite()
    {
        var r = DpoLoss.Compute(V(0), V(-5000), V(-5000), V(0), lossType: DpoLossType.Robust, labelSmoothing: 0.2);
        Assert.True(float.IsFinite(r.Loss.item<float>()));
        AllFinite(r.Metrics);
    }

    [Theory]
    [InlineData(DpoLossType.Robust, 0.5)]
    [InlineData(DpoLossType.Robust, -0.1)]
    [InlineData(DpoLossType.Conservative, 0.6)]
    [InlineData(DpoLossType.Sigmoid, 0.1)]
    [InlineData(DpoLossType.Hinge, 0.1)]
    [InlineData(DpoLossType.Robust, double.NaN)]
    public void RejectsBadLabelSmoothing(DpoLossType type, double eps)
    {
        var e = Assert.Throws<FineAlignException>(() => DpoLoss.Compute(V(-1), V(-2), V(-1), V(-2), lossType: type, labelSmoothing: eps));
        Assert.Contains("label smoothing", e.Message);
    }

    [Fact]
    public void RejectsBadInputs()
    {
        Assert.Throws<FineAlignException>(() => DpoLoss.Compute(V(-1), V(-2), V(-1), V(-2), beta: 0));
        Assert.Throws<FineAlignException>(() => DpoLoss.Compute(V(-1, -2), V(-2), V(-1), V(-2)));
        var ipo = Assert.Throws<FineAlignException>(() => DpoLoss.Compute(V(-1), V(-2), V(-1), V(-2), lossType: DpoLossType.Ipo));
        Assert.Contains("lengths", ipo.Message);
        Assert.Throws<FineAlignException>(() => DpoLoss.Compute(V(-1), V(-2), V(-1), V(-2), lossType: DpoLossType.Ipo,
                                                                chosenLengths: V(0), rejectedLengths: V(3)));
    }
}
