using FineAlign.Objectives;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Tests.Training;

public class CausalLmLossTests
{
    // Row 0: logits [ln 3, 0] → p = (3/4, 1/4); row 1: [0, 0] → (1/2, 1/2); row 2 unused (no next token).
    private static Tensor Logits() => tensor(new float[] { MathF.Log(3), 0, 0, 0, 5, -5 }, new long[] { 1, 3, 2 });
    private static Tensor Ids() => tensor(new long[] { 1, 0, 1 }, new long[] { 1, 3 });

    [Fact]
    public void TokenLogProbsAreShiftedByOne()
    {
        using var lp = CausalLmLoss.TokenLogProbs(Logits(), Ids());
        Assert.Equal(new long[] { 1, 2 }, lp.shape);
        var v = lp.data<float>().ToArray();
        Assert.Equal(Math.Log(0.75), v[0], 6); // logits[0] scores ids[1] = 0
        Assert.Equal(Math.Log(0.5), v[1], 6);  // logits[1] scores ids[2] = 1
    }

    [Fact]
    public void LossAveragesOnlyTargetTokens()
    {
        using var onlyFirst = CausalLmLoss.Loss(Logits(), Ids(), tensor(new[] { false, true, false }, new long[] { 1, 3 }));
        Assert.Equal(-Math.Log(0.75), onlyFirst.item<float>(), 6);
        using var both = CausalLmLoss.Loss(Logits(), Ids(), tensor(new[] { true, true, true }, new long[] { 1, 3 }));
        Assert.Equal((-Math.Log(0.75) - Math.Log(0.5)) / 2, both.item<float>(), 6); // mask[0] is never a target
    }

    [Fact]
    public void PaddingNeverLeaks()
    {
        // Second sequence: huge wrong logits, all masked out → the mean equals the first sequence's alone.
        var logits = cat(new[] { Logits(), tensor(new float[] { -50, 50, -50, 50, -50, 50 }, new long[] { 1, 3, 2 }) }, 0);
        var ids = tensor(new long[] { 1, 0, 1, 0, 0, 0 }, new long[] { 2, 3 });
        var mask = tensor(new[] { false, true, true, false, false, false }, new long[] { 2, 3 });
        using var loss = CausalLmLoss.Loss(logits, ids, mask);
        Assert.Equal((-Math.Log(0.75) - Math.Log(0.5)) / 2, loss.item<float>(), 6);

        using var seq = CausalLmLoss.SequenceLogProbs(logits, ids, mask);
        var s = seq.data<float>().ToArray();
        Assert.Equal(Math.Log(0.75) + Math.Log(0.5), s[0], 6);
        Assert.Equal(0f, s[1]);
        Assert.Equal(2, CausalLmLoss.CountTargets(mask));
    }

    [Fact]
    public void NoTargetsGivesZeroNotNaN()
    {
        using var loss = CausalLmLoss.Loss(Logits(), Ids(), zeros(new long[] { 1, 3 }, dtype: ScalarType.Bool));
        Assert.Equal(0f, loss.item<float>());
    }

    [Fact]
    public void GradientOfMeanNllIsSoftmaxMinusOneHot()
    {
        var logits = Logits().requires_grad_();
        var loss = CausalLmLoss.Loss(logits, Ids(), tensor(new[] { false, true, false }, new long[] { 1, 3 }));
        loss.backward();
        var g = logits.grad!.data<float>().ToArray();
        // d(-log p_0)/dlogits = p - onehot(0) = (3/4 - 1, 1/4) at row 0; other rows untouched.
        Assert.Equal(-0.25, g[0], 6);
        Assert.Equal(0.25, g[1], 6);
        Assert.All(g[2..], x => Assert.Equal(0f, x));
    }

    [Fact]
    public void ShapeMismatchIsAUserError()
    {
        var e = Assert.Throws<FineAlignException>(() => CausalLmLoss.Loss(Logits(), tensor(new long[] { 1, 0 }, new long[] { 1, 2 }), ones(new long[] { 1, 2 }, dtype: ScalarType.Bool)));
        Assert.Contains("input ids", e.Message);
    }

    [Fact]
    public void CausalLmStepExcludesPaddingEvenIfLossMaskSaysTarget()
    {
        var model = new TinyLm();
        var step = new CausalLmStep(model);
        var ids = tensor(new long[] { 1, 2, 3, 4, 5, 6, 0, 0 }, new long[] { 2, 4 });
        var attn = tensor(new long[] { 1, 1, 1, 1, 1, 1, 0, 0 }, new long[] { 2, 4 });
        var all = ones(new long[] { 2, 4 }, dtype: ScalarType.Bool);
        var r = step.Compute(ids, attn, all);
        using var expected = CausalLmLoss.Loss(model.Forward(ids, attn), ids, attn.ne(0));
        Assert.Equal(expected.item<float>(), r.Loss.item<float>());
        Assert.Equal(6, r.Tokens);
        Assert.Equal(4, r.Metrics!["num_target_tokens"]); // 3 in row 0, 1 in row 1
    }
}
