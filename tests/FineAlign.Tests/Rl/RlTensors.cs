using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Tests.Rl;

/// <summary>Small helpers to build and read fp32 tensors in hand-worked tests.</summary>
internal static class RlTensors
{
    public static Tensor F(float[] data, params long[] shape) => tensor(data, shape);

    public static Tensor Mask(params int[][] rows)
    {
        int t = rows[0].Length;
        return tensor(rows.SelectMany(r => r.Select(v => v != 0)).ToArray(), new long[] { rows.Length, t });
    }

    public static float[] V(Tensor t) => t.detach().to(float32).contiguous().data<float>().ToArray();

    public static float Ln(double x) => (float)Math.Log(x);

    public static void Near(double[] expected, Tensor actual, int digits = 5)
    {
        var a = V(actual);
        Assert.Equal(expected.Length, a.Length);
        for (int i = 0; i < a.Length; i++) Assert.True(Math.Abs(expected[i] - a[i]) < Math.Pow(10, -digits), $"index {i}: expected {expected[i]}, got {a[i]}");
    }
}
