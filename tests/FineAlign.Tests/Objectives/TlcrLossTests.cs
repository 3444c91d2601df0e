using FineAlign.Objectives;
using static TorchSharp.torch;

namespace FineAlign.Tests.Objectives;

public class TlcrLossTests
{
    private static readonly float Ln3 = (float)Math.Log(3);

    // Logits [0, ln 3] give P(positive) = 3/4; [0, 0] give ½.
    private static Tensor Scores(params float[][] rows) =>
        tensor(rows.SelectMany(r => r).ToArray(), [rows.Length, rows[0].Length / 2, 2]);

    [Fact]
    public void EachSideIsAveragedOnItsOwnAndTheSidesAreSummed()
    {
        // Row 0 (revised): a positive token at p = ¾ → ln(4/3); a neutral token at p = ½ → ln 2.       mean (ln(4/3) + ln 2) / 2
        // Row 1 (original): a negative token at p = ¾ → ln 4; padding.                                mean ln 4
        // Row 2 (original): a neutral token (weight ½) at p = ½ → ln 2; a negative at p = ½ → ln 2.   weighted mean ln 2
        // L = (ln(4/3) + ln 2) / 2 + (ln 4 + ln 2) / 2 = ½ ln(64/3) = 1.5301354.
        var scores = Scores([0, Ln3, 0, 0], [0, Ln3, 0, 0], [0, 0, 0, 0]);
        var targets = tensor(new float[] { 1, 0.5f, 0, 0, 0.5f, 0 }, [3, 2]);
        var weights = tensor(new float[] { 1, 1, 1, 0, 0.5f, 1 }, [3, 2]);
        var sides = tensor(new long[] { (long)TlcrSide.Revised, (long)TlcrSide.Original, (long)TlcrSide.Original });
        Assert.Equal(0.5 * Math.Log(64.0 / 3), TlcrLoss.Compute(scores, targets, weights, sides).item<float>(), 5);
        // The pooled mean over all three rows (the earlier reading) would be (0.4904 + 1.3863 + 0.6931) / 3 = 0.8566.
    }

    [Fact]
    public void AnUnbalancedBatchDoesNotReweightTheSides()
    {
        var one = TlcrLoss.Compute(Scores([0, Ln3], [0, 0]), tensor(new float[] { 1, 0 }, [2, 1]), ones(2, 1),
            tensor(new long[] { 1, 0 }));
        // The original row three times: its side's mean is unchanged, so is the loss: ln(4/3) + ln 2.
        var three = TlcrLoss.Compute(Scores([0, Ln3], [0, 0], [0, 0], [0, 0]), tensor(new float[] { 1, 0, 0, 0 }, [4, 1]), ones(4, 1),
            tensor(new long[] { 1, 0, 0, 0 }));
        Assert.Equal(Math.Log(4.0 / 3) + Math.Log(2), one.item<float>(), 5);
        Assert.Equal(one.item<float>(), three.item<float>(), 6);
    }

    [Fact]
    public void AnAbsentSideAddsNothingAndPaddingRowsAreIgnored()
    {
        // Only a revised row (ln 2 at p = ½) and a row without any weighted token.
        var loss = TlcrLoss.Compute(Scores([0, 0], [5, -5]), tensor(new float[] { 1, 1 }, [2, 1]), tensor(new float[] { 1, 0 }, [2, 1]),
            tensor(new long[] { 1, 0 }));
        Assert.Equal(Math.Log(2), loss.item<float>(), 5);
    }
}
