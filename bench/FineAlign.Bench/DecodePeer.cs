using System.Diagnostics;
using System.Text.Json.Nodes;
using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Models.Gguf;
using FineAlign.Text;
using LLama;
using LLama.Common;
using LLama.Native;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// Issue #18's side-by-side decode benchmark and issue #16's export timing:
///
///   dotnet run -c Release --project bench/FineAlign.Bench -- --workload decode-peer [--reps 3] [--threads 2]
///   dotnet run -c Release --project bench/FineAlign.Bench -- --workload export-gguf
///
/// One process, one run: FineAlign (TorchSharp) and llama.cpp (LLamaSharp 0.30, bench-only dependency) decode the
/// same weights — FineAlign's own f32 GGUF export of a random stories15M-shape model (ModelPresets "stories15m":
/// dim 288, 6 layers, 6 heads, FFN 768; here with a 32000 vocabulary, untied head, context 256, as the other bench
/// workloads) — from the same 64-token prompts to 128 new tokens, no early stop, at batch 1 and 8, greedy and
/// top-p 0.9 (temperature 1), 2 threads. llama.cpp runs with flash attention off and an f32 KV cache (the same math as
/// FineAlign), one sequence id per batch row, and samples with its own sampler chain. The engines alternate, the
/// order flipping every repetition; each rate is the median of ≥ 3 timed calls after one warm-up.
///
/// Roofline of a call: the prefill at the measured fp32 GEMM peak plus every decode step streaming the matmul weights
/// (4·N' bytes) and the K/V cache of every cached token (4·2·L·B·s·d) once, at the measured copy bandwidth.
/// </summary>
internal static class DecodePeer
{
    private const int PromptLen = 64, NewTokens = 128;

    public static int Run(string workload, Dictionary<string, string> args)
    {
        int threads = int.Parse(args.GetValueOrDefault("threads", "2"));
        int reps = Math.Max(3, int.Parse(args.GetValueOrDefault("reps", "3")));
        torch.set_num_threads(threads);
        NativeLibraryConfig.All.WithLogCallback((level, message) => { if (level == LLamaLogLevel.Error) Console.Error.Write(message); });

        var config = Stories15M();
        string root = Path.Combine(Path.GetTempPath(), "finealign-decode-peer-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(root);
        try
        {
            using var model = ModelFactory.Create(config, seed: 0);
            model.eval();
            string folder = Path.Combine(root, "stories15m");
            ModelIO.Save(model, folder, new ByteTokenizer());   // the byte vocabulary, padded to 32000 in the GGUF

            // Export timing and size (issue #16): median of reps, f32 and f16.
            string gguf = Path.Combine(root, "stories15m-f32.gguf");
            foreach (var type in new[] { GgmlType.F32, GgmlType.F16 })
            {
                string path = Path.Combine(root, $"stories15m-{type.ToString().ToLowerInvariant()}.gguf");
                var times = new List<double>();
                GgufExportResult? result = null;
                for (int r = 0; r < reps; r++)
                {
                    var sw = Stopwatch.StartNew();
                    result = GgufExporter.Export(model, folder, path, type);
                    times.Add(sw.Elapsed.TotalSeconds);
                }
                long safetensorsBytes = Directory.GetFiles(folder, "*.safetensors").Sum(f => new FileInfo(f).Length);
                Report(new JsonObject
                {
                    ["workload"] = "export-gguf", ["type"] = type.ToString().ToLowerInvariant(), ["params"] = model.parameters().Sum(p => p.numel()),
                    ["export_s_median"] = Math.Round(Median(times), 3), ["export_s_all"] = Arr(times),
                    ["file_mb"] = Math.Round(result!.Bytes / 1e6, 2), ["safetensors_mb"] = Math.Round(safetensorsBytes / 1e6, 2),
                    ["mb_per_s"] = Math.Round(result.Bytes / 1e6 / Median(times), 1), ["tensors"] = result.TensorCount,
                });
            }
            if (workload == "export-gguf") return 0;

            long nAll = model.parameters().Sum(p => p.numel());
            long nEmbedding = model.named_parameters().Where(p => p.name.EndsWith("embed_tokens.weight")).Sum(p => p.parameter.numel());
            long nMatmul = nAll - nEmbedding;
            double gemmPeak = GemmPeak(), bandwidth = CopyBandwidth();
            Report(new JsonObject
            {
                ["workload"] = "machine", ["threads"] = threads, ["gemm_fp32_gflops_median"] = Math.Round(gemmPeak, 1),
                ["copy_gb_per_s_median"] = Math.Round(bandwidth, 1), ["params"] = nAll, ["params_matmul"] = nMatmul, ["load_1min"] = LoadAverage(),
            });

            var mp = new ModelParams(gguf)
            {
                ContextSize = 8 * 256, BatchSize = 8 * PromptLen, UBatchSize = 8 * PromptLen, SeqMax = 8,
                Threads = threads, BatchThreads = threads, GpuLayerCount = 0,
                FlashAttention = false, TypeK = GGMLType.GGML_TYPE_F32, TypeV = GGMLType.GGML_TYPE_F32,
            };
            using var weights = LLamaWeights.LoadFromFile(mp);
            using var context = weights.CreateContext(mp);

            foreach (int batch in new[] { 1, 8 })
                foreach (bool greedy in new[] { true, false })
                {
                    var rng = new Random(batch * 10 + (greedy ? 1 : 2));
                    var prompts = Enumerable.Range(0, batch).Select(_ => Enumerable.Range(0, PromptLen).Select(_ => rng.Next(config.VocabSize)).ToArray()).ToList();
                    var options = new GenerationOptions
                    {
                        MaxNewTokens = NewTokens, DoSample = !greedy, Temperature = 1.0, TopP = greedy ? 1.0 : 0.9, Seed = 1,
                        EosTokenIds = Array.Empty<int>(),
                    };
                    int[][]? fineTokens = null, llamaTokens = null;
                    void Fine() => fineTokens = TextGenerator.Generate(model, prompts, options).Select(g => g.Tokens).ToArray();
                    void Llama() => llamaTokens = LlamaGenerate(context, prompts, greedy, seed: 1);
                    Fine(); Llama();   // warm-up
                    var fineTimes = new List<double>();
                    var llamaTimes = new List<double>();
                    for (int r = 0; r < reps; r++)
                    {
                        // Alternate which engine goes first, so drifting machine load does not favour one.
                        if (r % 2 == 0) { llamaTimes.Add(Time(Llama)); fineTimes.Add(Time(Fine)); }
                        else { fineTimes.Add(Time(Fine)); llamaTimes.Add(Time(Llama)); }
                    }
                    if (fineTokens!.Any(t => t.Length != NewTokens) || llamaTokens!.Any(t => t.Length != NewTokens))
                        throw new InvalidOperationException("a row stopped early");

                    // Roofline of one call (see the header).
                    double prefillFlops = batch * PromptLen * (2.0 * nMatmul + 4.0 * config.NumLayers * config.HiddenSize * PromptLen);
                    double decodeBytes = 0;
                    for (int s = PromptLen + 1; s < PromptLen + NewTokens; s++)
                        decodeBytes += 4.0 * nMatmul + 4.0 * 2 * config.NumLayers * batch * s * config.HiddenSize;
                    double roofline = prefillFlops / (gemmPeak * 1e9) + decodeBytes / (bandwidth * 1e9);
                    double fine = Median(fineTimes), llama = Median(llamaTimes);
                    int newPerCall = batch * NewTokens;
                    var o = new JsonObject
                    {
                        ["workload"] = "decode-peer", ["batch"] = batch, ["sampling"] = greedy ? "greedy" : "top_p_0.9",
                        ["prompt_tokens"] = PromptLen, ["new_tokens"] = NewTokens, ["threads"] = threads, ["reps"] = reps,
                        ["finealign_new_tok_s"] = Math.Round(newPerCall / fine, 1), ["llamacpp_new_tok_s"] = Math.Round(newPerCall / llama, 1),
                        ["ratio"] = Math.Round(llama / fine, 3),
                        ["finealign_call_s_all"] = Arr(fineTimes), ["llamacpp_call_s_all"] = Arr(llamaTimes),
                        ["roofline_s"] = Math.Round(roofline, 4),
                        ["finealign_roofline_fraction"] = Math.Round(roofline / fine, 3), ["llamacpp_roofline_fraction"] = Math.Round(roofline / llama, 3),
                        ["decode_bytes_per_step_mb"] = Math.Round(decodeBytes / (NewTokens - 1) / (1 << 20), 1),
                        ["load_1min"] = LoadAverage(),
                    };
                    // Same weights, same math: greedy continuations should agree (random weights give near-flat logits, so
                    // a late near-tie may flip one token and everything after it; reported, not asserted).
                    if (greedy) o["greedy_same_prefix_tokens_row0"] = fineTokens![0].Zip(llamaTokens![0]).TakeWhile(p => p.First == p.Second).Count();
                    Report(o);
                }
            return 0;
        }
        finally
        {
            try { Directory.Delete(root, true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// llama.cpp generation with one sequence id per prompt: one batched prefill, then one batched decode of B tokens
    /// per step; llama.cpp's own sampler chain (greedy, or top-p 0.9 → temperature 1 → seeded draw) per row.
    /// </summary>
    private static int[][] LlamaGenerate(LLamaContext context, List<int[]> prompts, bool greedy, uint seed)
    {
        var ctx = context.NativeHandle;
        ctx.MemoryClear(true);
        int b = prompts.Count;
        var samplers = Enumerable.Range(0, b).Select(i =>
        {
            var chain = SafeLLamaSamplerChainHandle.Create(LLamaSamplerChainParams.Default());
            if (greedy) chain.AddGreedySampler();
            else { chain.AddTopP(0.9f, 1); chain.AddTemperature(1.0f); chain.AddDistributionSampler(seed + (uint)i); }
            return chain;
        }).ToArray();
        try
        {
            var batch = new LLamaBatch();
            var logitIndex = new int[b];
            for (int s = 0; s < b; s++)
                for (int t = 0; t < prompts[s].Length; t++)
                {
                    bool last = t == prompts[s].Length - 1;
                    int idx = batch.Add(prompts[s][t], t, (LLamaSeqId)s, last);
                    if (last) logitIndex[s] = idx;
                }
            Decode(ctx, batch);
            var output = Enumerable.Range(0, b).Select(_ => new int[NewTokens]).ToArray();
            for (int step = 0; step < NewTokens; step++)
            {
                for (int s = 0; s < b; s++)
                {
                    var token = samplers[s].Sample(ctx, logitIndex[s]);
                    samplers[s].Accept(token);
                    output[s][step] = (int)token;
                }
                if (step == NewTokens - 1) break;   // the last token's successor is never needed
                batch.Clear();
                for (int s = 0; s < b; s++) logitIndex[s] = batch.Add(output[s][step], prompts[s].Length + step, (LLamaSeqId)s, true);
                Decode(ctx, batch);
            }
            return output;
        }
        finally
        {
            foreach (var s in samplers) s.Dispose();
        }
    }

    private static void Decode(SafeLLamaContextHandle ctx, LLamaBatch batch)
    {
        var r = ctx.Decode(batch);
        if (r != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode returned {r}");
    }

    // The stories15M shape of ModelPresets ("stories15m": 288, 6 layers, 6 heads, 768) with the 32000-token
    // vocabulary, untied head and context 256 of the other bench workloads.
    private static ModelConfig Stories15M() => new()
    {
        ModelType = "llama", VocabSize = 32000, HiddenSize = 288, IntermediateSize = 768, NumLayers = 6,
        NumHeads = 6, NumKvHeads = 6, HeadDim = 48, MaxPositionEmbeddings = 256, NormEps = 1e-5,
        RopeTheta = 10000, TieWordEmbeddings = false, EosTokenIds = new[] { 257 }, BosTokenId = 256, PadTokenId = 258,
    };

    private static double Time(Action a)
    {
        var sw = Stopwatch.StartNew();
        a();
        return sw.Elapsed.TotalSeconds;
    }

    private static double GemmPeak()
    {
        double best = 0;
        foreach (int size in new[] { 1024, 2048 })
        {
            using var a = torch.randn(size, size);
            using var b = torch.randn(size, size);
            a.matmul(b).Dispose();
            var rates = new List<double>();
            for (int r = 0; r < 7; r++)
            {
                var sw = Stopwatch.StartNew();
                a.matmul(b).Dispose();
                rates.Add(2.0 * size * size * size / sw.Elapsed.TotalSeconds / 1e9);
            }
            best = Math.Max(best, Median(rates));
        }
        return best;
    }

    private static double CopyBandwidth()
    {
        const long n = 64L << 20;   // 256 MB of fp32, read + written per copy
        using var src = torch.rand(n);
        using var dst = torch.empty(n);
        dst.copy_(src);
        var rates = new List<double>();
        for (int r = 0; r < 7; r++)
        {
            var sw = Stopwatch.StartNew();
            dst.copy_(src);
            rates.Add(2.0 * n * 4 / sw.Elapsed.TotalSeconds / 1e9);
        }
        return Median(rates);
    }

    private static double Median(List<double> xs)
    {
        var s = xs.OrderBy(x => x).ToList();
        return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
    }

    private static JsonArray Arr(List<double> xs) => new(xs.Select(t => (JsonNode)Math.Round(t, 4)).ToArray());

    private static double LoadAverage()
    {
        try { return double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture); }
        catch (IOException) { return -1; }
    }

    private static void Report(JsonObject o) => Console.WriteLine(o.ToJsonString());
}
