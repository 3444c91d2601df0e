using FineAlign.Objectives;
using static FineAlign.Tests.Objectives.T;

namespace FineAlign.Tests.Objectives;

public class RewardClassificationLossTests
{
    // r = [0, ln 3, −1], y = [1, 0, 0]:
    // −log σ(0) = ln 2 = 0.6931472; −log σ(−ln 3) = ln(1 + 3) = 1.3862944; −log σ(1) = ln(1 + e^−1) = 0.3132617; mean 0.7975678.
    [Fact]
    public void HandWorkedLossAndMetrics()
    {
        var r = RewardClassificationLoss.Compute(V(0f, (float)Math.Log(3), -1f), B(true, false, false));
        var losses = Values(r.Losses);
        Assert.Equal(0.6931472, losses[0], 5);
        Assert.Equal(1.3862944, losses[1], 5);
        Assert.Equal(0.3132617, losses[2], 5);
        Assert.Equal(0.7975678, r.Loss.item<float>(), 5);
        // r > 0 is "positive": [no, yes, no] against [yes, no, no] ⇒ only the third is right.
        Assert.Equal(1 / 3.0, r.Metrics["accuracy"], 6);
        Assert.Equal(0, r.Metrics["rewards/positive"], 6);
        Assert.Equal((Math.Log(3) - 1) / 2, r.Metrics["rewards/negative"], 5);
    }

    [Fact]
    public void GradientPushesTheScoreTowardTheLabel()
    {
        var scores = G(0.5f, 0.5f);
        RewardClassificationLoss.Compute(scores, B(true, false)).Loss.backward();
        var g = Grad(scores);
        // ∂L/∂r = (σ(r) − y) / B: negative for the positive example (raise r), positive for the negative one.
        Assert.Equal((1 / (1 + Math.Exp(-0.5)) - 1) / 2, g[0], 5);
        Assert.Equal((1 / (1 + Math.Exp(-0.5))) / 2, g[1], 5);
    }
}
