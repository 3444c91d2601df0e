using FineAlign.Data;
using FineAlign.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Serving;

/// <summary>One alternative token at a position and its log-probability.</summary>
internal readonly record struct TopToken(int Id, float LogProb);

/// <summary>
/// Log-probs of the tokens of a sequence from position <see cref="From"/> on: <see cref="LogProbs"/>[k] =
/// log p(ids[From + k] | ids[..From + k]); <see cref="Top"/>[k] the most likely tokens at that position (best first).
/// </summary>
internal sealed record TokenScores(int From, float[] LogProbs, TopToken[][] Top);

/// <summary>
/// Teacher-forced scoring of finished sequences, as <c>finealign logprobs</c> does: one right-padded forward pass and
/// <see cref="SequenceLogProbs.PerToken"/> (what SequenceLogProbs.Score, behind `finealign logprobs`, uses) (log_softmax at temperature 1, the model's own distribution, which is
/// what vLLM returns by default). The top-k alternatives come from log_softmax of the same logits.
/// </summary>
internal static class TokenScorer
{
    public static TokenScores[] Score(CausalLM model, IReadOnlyList<(int[] Ids, int From, int TopK)> rows)
    {
        var result = new TokenScores[rows.Count];
        if (rows.Count == 0) return result;
        int b = rows.Count, len = rows.Max(r => r.Ids.Length);
        if (len < 2)
        {
            for (int i = 0; i < b; i++) result[i] = new TokenScores(rows[i].From, [], []);
            return result;
        }
        var ids = PadRows.Rows(rows.Select(r => (IReadOnlyList<long>)Array.ConvertAll(r.Ids, v => (long)v)).ToList(), len, 0L);
        var mask = PadRows.Mask(rows.Select(r => r.Ids.Length).ToList(), len, 1L);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var device = model.parameters().First().device;
        var idsT = tensor(ids, [b, len], device: device);
        var maskT = tensor(mask, [b, len], device: device);
        var logits = model.Forward(idsT, maskT);
        var lp = SequenceLogProbs.PerToken(logits, idsT).cpu().data<float>().ToArray();   // [b, len-1]
        for (int i = 0; i < b; i++)
        {
            var (seq, from, k) = rows[i];
            from = Math.Max(from, 1);                          // the first token has no prediction
            int count = Math.Max(0, seq.Length - from);
            var picked = new float[count];
            for (int j = 0; j < count; j++) picked[j] = lp[i * (len - 1) + from + j - 1];
            var top = new TopToken[count][];
            if (k > 0 && count > 0)
            {
                using var rowScope = NewDisposeScope();
                var rowLogp = logits[i, TensorIndex.Slice(from - 1, seq.Length - 1)].to_type(ScalarType.Float32).log_softmax(-1);
                var (values, indices) = rowLogp.topk(Math.Min(k, model.Config.VocabSize), -1);
                var v = values.cpu().data<float>().ToArray();
                var ix = indices.cpu().data<long>().ToArray();
                int kk = (int)values.shape[1];
                for (int j = 0; j < count; j++)
                {
                    top[j] = new TopToken[kk];
                    for (int q = 0; q < kk; q++) top[j][q] = new TopToken((int)ix[j * kk + q], v[j * kk + q]);
                }
            }
            else for (int j = 0; j < count; j++) top[j] = [];
            result[i] = new TokenScores(from, picked, top);
        }
        return result;
    }
}
