using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using FineAlign.Generation;
using FineAlign.Models;
using TorchSharp;
using static TorchSharp.torch;

// FineAlign benchmarks: the workloads of ../shared/bench/reference_pytorch.py on the stories15M
// shape, each reported as tokens/s and as model-FLOPs utilisation (MFU) against the fp32 GEMM peak
// measured in the same run. Not a test: run it by hand (see bench/RESULTS.md).
//
//   dotnet run -c Release --project bench/FineAlign.Bench -- [--workload all|gemm|fwdbwd|generate] [--reps N] [--threads N]

var argsMap = ParseArgs(args);
int threads = int.Parse(argsMap.GetValueOrDefault("threads", "2"));
int reps = int.Parse(argsMap.GetValueOrDefault("reps", "5"));
string workload = argsMap.GetValueOrDefault("workload", "all");
torch.set_num_threads(threads);
torch.manual_seed(0);

var results = new List<JsonObject>();
double gemmPeak = MeasureGemmPeak(reps);
Report(new JsonObject { ["workload"] = "gemm_fp32", ["threads"] = threads, ["gflops_median"] = Math.Round(gemmPeak, 1) });

var config = Stories15M();
long n = CountParams(config);

if (workload is "all" or "fwdbwd")
{
    // Forward + backward of the causal-LM loss at batch 16 × 256 (no optimizer step: the issue's
    // "forward+backward tokens/s"). FLOPs ≈ 6·N·T (Kaplan et al. 2020), attention score FLOPs excluded.
    using var model = ModelFactory.Create(config, seed: 0);
    model.train();
    var ids = torch.randint(0, config.VocabSize, new long[] { 16, 256 }, dtype: ScalarType.Int64);
    var times = new List<double>();
    for (int r = 0; r < reps + 1; r++)
    {
        using var scope = torch.NewDisposeScope();
        var sw = Stopwatch.StartNew();
        var logits = model.Forward(ids);
        var loss = nn.functional.cross_entropy(
            logits[TensorIndex.Colon, TensorIndex.Slice(null, -1)].reshape(-1, config.VocabSize),
            ids[TensorIndex.Colon, TensorIndex.Slice(1, null)].reshape(-1));
        loss.backward();
        sw.Stop();
        model.zero_grad();
        if (r > 0) times.Add(sw.Elapsed.TotalSeconds);   // first run is warm-up
    }
    double med = Median(times);
    double tokens = 16 * 256;
    double flops = 6.0 * n * tokens;
    Report(new JsonObject
    {
        ["workload"] = "fwdbwd", ["params"] = n, ["tokens_per_step"] = tokens, ["step_s_median"] = Math.Round(med, 4),
        ["tokens_per_s"] = Math.Round(tokens / med, 1), ["gflops"] = Math.Round(flops / med / 1e9, 1),
        ["mfu_vs_gemm"] = Math.Round(flops / med / 1e9 / gemmPeak, 3),
        ["peak_rss_mb"] = Process.GetCurrentProcess().PeakWorkingSet64 / (1 << 20),
    });
}

if (workload is "all" or "generate")
{
    // 8 prompts × 64 tokens, 128 new tokens, KV cache, temperature 1, top-p 0.9, no early stop.
    using var model = ModelFactory.Create(config, seed: 0);
    var prompts = Enumerable.Range(0, 8).Select(i =>
        torch.randint(0, config.VocabSize, new long[] { 64 }, dtype: ScalarType.Int64).data<long>().Select(x => (int)x).ToArray()).ToList();
    var options = new GenerationOptions
    {
        MaxNewTokens = 128, DoSample = true, Temperature = 1.0, TopP = 0.9, Seed = 1,
        EosTokenIds = Array.Empty<int>(),   // no early stop, as in the reference
    };
    TextGenerator.Generate(model, prompts, options with { MaxNewTokens = 8 });   // warm-up
    var times = new List<double>();
    for (int r = 0; r < Math.Max(1, reps / 2); r++)
    {
        var sw = Stopwatch.StartNew();
        TextGenerator.Generate(model, prompts, options);
        times.Add(sw.Elapsed.TotalSeconds);
    }
    double med = Median(times);
    double newTokens = 8 * 128;
    // Decoding FLOPs ≈ 2·N per token for the prompt and every new token.
    double flops = 2.0 * n * 8 * (64 + 128);
    Report(new JsonObject
    {
        ["workload"] = "generate", ["params"] = n, ["new_tokens_per_call"] = newTokens, ["call_s_median"] = Math.Round(med, 4),
        ["new_tokens_per_s"] = Math.Round(newTokens / med, 1), ["gflops"] = Math.Round(flops / med / 1e9, 1),
        ["mfu_vs_gemm"] = Math.Round(flops / med / 1e9 / gemmPeak, 3),
        ["peak_rss_mb"] = Process.GetCurrentProcess().PeakWorkingSet64 / (1 << 20),
    });
}

return 0;

static ModelConfig Stories15M() => new()
{
    ModelType = "llama", VocabSize = 32000, HiddenSize = 288, IntermediateSize = 768, NumLayers = 6,
    NumHeads = 6, NumKvHeads = 6, HeadDim = 48, MaxPositionEmbeddings = 256, NormEps = 1e-5,
    RopeTheta = 10000, TieWordEmbeddings = false, EosTokenIds = new[] { 2 }, BosTokenId = 1,
};

static long CountParams(ModelConfig c)
{
    using var m = ModelFactory.Create(c, seed: 0);
    return m.parameters().Sum(p => p.numel());
}

static double MeasureGemmPeak(int reps)
{
    // Square fp32 matmuls; the median over repetitions resists the dips of a shared machine.
    const int size = 1536;
    using var a = torch.randn(size, size);
    using var b = torch.randn(size, size);
    using (var warm = a.matmul(b)) { }
    var rates = new List<double>();
    for (int r = 0; r < Math.Max(5, reps * 2); r++)
    {
        var sw = Stopwatch.StartNew();
        using var c = a.matmul(b);
        sw.Stop();
        rates.Add(2.0 * size * size * size / sw.Elapsed.TotalSeconds / 1e9);
    }
    return Median(rates);
}

static double Median(List<double> xs)
{
    var s = xs.OrderBy(x => x).ToList();
    return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
}

void Report(JsonObject o)
{
    results.Add(o);
    Console.WriteLine(o.ToJsonString());
}

static Dictionary<string, string> ParseArgs(string[] a)
{
    var d = new Dictionary<string, string>();
    for (int i = 0; i + 1 < a.Length; i += 2) d[a[i].TrimStart('-')] = a[i + 1];
    return d;
}
