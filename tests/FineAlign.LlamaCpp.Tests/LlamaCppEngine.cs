using LLama;
using LLama.Common;
using LLama.Native;

namespace FineAlign.LlamaCpp.Tests;

/// <summary>
/// llama.cpp (through LLamaSharp) as the oracle: flash attention off and an f32 KV cache, so it does the same math
/// as FineAlign (llama.cpp's defaults, an f16 cache and flash attention, add ~1e-3 of noise).
/// </summary>
public sealed class LlamaCppEngine : IDisposable
{
    private readonly LLamaWeights _weights;
    private readonly LLamaContext _context;

    static LlamaCppEngine()
    {
        // Quiet: llama.cpp logs every tensor at load; keep warnings and errors.
        NativeLibraryConfig.All.WithLogCallback((level, message) =>
        {
            if (level is LLamaLogLevel.Warning or LLamaLogLevel.Error) Console.Error.Write(message);
        });
    }

    public LlamaCppEngine(string ggufPath, int contextSize = 128, int threads = 2, bool vocabOnly = false)
    {
        var p = new ModelParams(ggufPath)
        {
            ContextSize = (uint)contextSize, BatchSize = (uint)contextSize, UBatchSize = (uint)contextSize,
            Threads = threads, BatchThreads = threads, GpuLayerCount = 0, VocabOnly = vocabOnly,
            FlashAttention = false,
            TypeK = GGMLType.GGML_TYPE_F32, TypeV = GGMLType.GGML_TYPE_F32,
        };
        _weights = LLamaWeights.LoadFromFile(p);
        _context = vocabOnly ? null! : _weights.CreateContext(p);
    }

    public int VocabCount => _weights.Vocab.Count;
    public LLamaWeights Weights => _weights;

    /// <summary>log-softmax (in double) of llama.cpp's logits at every position of <paramref name="ids"/>, one fresh sequence.</summary>
    public double[][] LogProbs(int[] ids)
    {
        _context.NativeHandle.MemoryClear(true);
        var batch = new LLamaBatch();
        for (int i = 0; i < ids.Length; i++) batch.Add(ids[i], i, LLamaSeqId.Zero, true);
        Check(_context.NativeHandle.Decode(batch));
        return Enumerable.Range(0, ids.Length).Select(i => LogSoftmax(_context.NativeHandle.GetLogitsIth(i))).ToArray();
    }

    /// <summary>Greedy continuation of <paramref name="prompt"/> (argmax of the logits), <paramref name="n"/> tokens, no early stop.</summary>
    public int[] Greedy(int[] prompt, int n)
    {
        _context.NativeHandle.MemoryClear(true);
        var batch = new LLamaBatch();
        for (int i = 0; i < prompt.Length; i++) batch.Add(prompt[i], i, LLamaSeqId.Zero, i == prompt.Length - 1);
        Check(_context.NativeHandle.Decode(batch));
        var output = new List<int>();
        int pos = prompt.Length;
        while (true)
        {
            int next = ArgMax(_context.NativeHandle.GetLogitsIth(batch.TokenCount - 1));
            output.Add(next);
            if (output.Count == n) return output.ToArray();
            batch.Clear();
            batch.Add(next, pos++, LLamaSeqId.Zero, true);
            Check(_context.NativeHandle.Decode(batch));
        }
    }

    public int[] Tokenize(string text, bool addBos, bool special)
        => _weights.NativeHandle.Tokenize(text, addBos, special, System.Text.Encoding.UTF8).Select(t => (int)t).ToArray();

    private static void Check(DecodeResult r)
    {
        if (r != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode returned {r}");
    }

    private static int ArgMax(Span<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    private static double[] LogSoftmax(Span<float> x)
    {
        double max = double.NegativeInfinity;
        foreach (float v in x) max = Math.Max(max, v);
        double sum = 0;
        foreach (float v in x) sum += Math.Exp(v - max);
        double lse = max + Math.Log(sum);
        var r = new double[x.Length];
        for (int i = 0; i < x.Length; i++) r[i] = x[i] - lse;
        return r;
    }

    public void Dispose()
    {
        _context?.Dispose();
        _weights.Dispose();
    }
}
