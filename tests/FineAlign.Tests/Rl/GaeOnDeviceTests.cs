using FineAlign.Objectives;
using TorchSharp;
using static TorchSharp.torch;
using static FineAlign.Tests.Rl.RlTensors;

namespace FineAlign.Tests.Rl;

/// <summary>
/// GAE as tensor ops on the inputs' device (issue #15) against the scalar host recursion it replaced, kept here as the
/// oracle: the same float64 accumulation and one rounding to fp32, so the results are bit for bit the same. (The
/// hand-worked examples are in <see cref="PpoTests"/>.)
/// </summary>
public class GaeOnDeviceTests
{
    /// <summary>The previous implementation of <see cref="Ppo.Gae"/>: host arrays, double accumulators, (float) per output.</summary>
    private static (float[] Adv, float[] Ret) HostGae(float[] r, float[] v, float[] m, int b, int t, double gamma, double lambda)
    {
        var adv = new float[b * t];
        var ret = new float[b * t];
        for (int i = 0; i < b; i++)
        {
            double nextValue = 0, nextAdv = 0;
            for (int j = t - 1; j >= 0; j--)
            {
                int k = i * t + j;
                if (m[k] == 0) { nextValue = 0; nextAdv = 0; continue; }
                double delta = r[k] + gamma * nextValue - v[k];
                double a = delta + gamma * lambda * nextAdv;
                adv[k] = (float)a;
                ret[k] = (float)(a + v[k]);
                nextValue = v[k];
                nextAdv = a;
            }
        }
        return (adv, ret);
    }

    [Theory]
    [InlineData(1.0, 0.95)]
    [InlineData(0.99, 0.95)]
    [InlineData(0.9, 1.0)]
    [InlineData(0.5, 0.3)]
    public void Device_gae_equals_the_host_recursion_bit_for_bit(double gamma, double lambda)
    {
        const int b = 5, t = 37;
        var g = new Generator(11);
        var rewards = randn(b, t, generator: g) * 3;
        var values = randn(b, t, generator: g);
        // Right padding of several lengths, a fully padded row, left padding, and a hole in the middle of a row.
        var mask = ones(b, t);
        mask[0, 30..] = zeros(7); mask[1, ..] = zeros(t); mask[2, ..4] = zeros(4); mask[3, 10..13] = zeros(3);
        var (adv, ret) = Ppo.Gae(rewards, values, mask, gamma, lambda);
        var (hostAdv, hostRet) = HostGae(V(rewards), V(values), V(mask), b, t, gamma, lambda);
        Assert.Equal(float32, adv.dtype);
        Assert.Equal(hostAdv, V(adv));
        Assert.Equal(hostRet, V(ret));
        // Bool masks and a long reward-to-go (REINFORCE++ calls it with V ≡ 0, λ = 1) take the same path.
        var (adv2, _) = Ppo.Gae(rewards, zeros(b, t), mask.ne(0), gamma, 1.0);
        Assert.Equal(HostGae(V(rewards), new float[b * t], V(mask), b, t, gamma, 1.0).Adv, V(adv2));
    }

    [Fact]
    public void Device_gae_leaves_inputs_on_their_device_and_needs_no_gradient()
    {
        var rewards = F(new[] { 0f, 0, 1 }, 1, 3).requires_grad_(true);
        var (adv, ret) = Ppo.Gae(rewards, F(new[] { 0.5f, 0.4f, 0.8f }, 1, 3), Mask(new[] { 1, 1, 1 }));
        Assert.False(adv.requires_grad);
        Assert.Equal(rewards.device_type, adv.device_type);
        Near(new[] { 0.4605, 0.59, 0.2 }, adv);
        Near(new[] { 0.9605, 0.99, 1.0 }, ret);
        var (empty, _) = Ppo.Gae(zeros(2, 0), zeros(2, 0), zeros(2, 0));
        Assert.Equal(new long[] { 2, 0 }, empty.shape);
    }
}
