using static TorchSharp.torch;

namespace FineAlign.Generation;

/// <summary>How far a remote engine's view of the policy is from the trainer's.</summary>
public static class RemoteRolloutMetrics
{
    /// <summary>
    /// Mean |server log-prob − local log-prob| over the response tokens the server scored (NaN entries, e.g. a stop
    /// token a server left out, are skipped); 0 when server and trainer hold the same weights. <paramref name="local"/> is [B, T].
    /// </summary>
    public static double LogProbGap(IReadOnlyList<RolloutSample> samples, Tensor local)
    {
        using var scope = NewDisposeScope();
        var l = local.to(float32).cpu();
        double sum = 0; long count = 0;
        for (int i = 0; i < samples.Count; i++)
        {
            if (samples[i].LogProbs is not float[] server) continue;
            var row = l[i].data<float>().ToArray();
            for (int t = 0; t < server.Length && t < row.Length; t++)
                if (float.IsFinite(server[t])) { sum += Math.Abs(server[t] - row[t]); count++; }
        }
        return count == 0 ? double.NaN : sum / count;
    }
}
