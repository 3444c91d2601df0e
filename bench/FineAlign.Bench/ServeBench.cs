using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Serving;
using TorchSharp;

/// <summary>
/// <c>--workload serve</c>: finealign serve's throughput against direct in-process generation of the same prompts.
/// Stories15M shape (random weights), 64-token random prompts, 128 new tokens (temperature 1, top-p 0.9, no early
/// stop). For c = 1, 4, 16 concurrent HTTP clients (each sending its requests one after another to a real Kestrel
/// server on loopback, in this process), the direct baseline decodes the same prompts in batches of c — what the
/// server can at best do with c requests in flight. The ratio server / direct is the server's cost (HTTP, JSON,
/// the batching queue, and batches that formed smaller than c).
/// </summary>
internal static class ServeBench
{
    private const int PromptLen = 64, NewTokens = 128;

    public static async Task<int> RunAsync(int reps)
    {
        var config = new ModelConfig
        {
            ModelType = "llama", VocabSize = 32000, HiddenSize = 288, IntermediateSize = 768, NumLayers = 6,
            NumHeads = 6, NumKvHeads = 6, HeadDim = 48, MaxPositionEmbeddings = 256, NormEps = 1e-5,
            RopeTheta = 10000, TieWordEmbeddings = false, EosTokenIds = [2], BosTokenId = 1,
        };
        string dir = Path.Combine(Path.GetTempPath(), "finealign-serve-bench-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            using (var m = ModelFactory.Create(config, seed: 0)) ModelIO.Save(m, dir);
            var rng = new Random(1);
            int[][] prompts = Enumerable.Range(0, 16).Select(_ => Enumerable.Range(0, PromptLen).Select(_ => rng.Next(3, config.VocabSize)).ToArray()).ToArray();
            var options = new GenerationOptions { MaxNewTokens = NewTokens, DoSample = true, Temperature = 1.0, TopP = 0.9, Seed = 1, EosTokenIds = [] };

            using var model = ModelIO.Load(dir);
            model.eval();
            await using var server = await OpenAiServer.StartAsync(new ServeOptions { ModelPath = dir, ServedModelName = "bench", Port = 0, MaxBatch = 16 });
            using var http = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromMinutes(30) };

            // Direct generation runs on one dedicated thread, as the server's worker does (after an await the bench's
            // own code may continue on any pool thread, and every new thread calling libtorch starts its own OpenMP team).
            using var directThread = new DedicatedThread();
            await directThread.Run(() => TextGenerator.Generate(model, [prompts[0]], options with { MaxNewTokens = 4 }).Count);   // warm-up, both paths
            await Post(http, prompts[0], 4);

            foreach (int clients in new[] { 1, 4, 16 })
            {
                int requests = Math.Max(4, clients);          // c = 1 and 4 send 4 requests; 16 sends 16
                var chosen = prompts.Take(requests).ToArray();
                var direct = new List<double>();
                var served = new List<double>();
                long batchesBefore = server.Metrics.Batches, rowsBefore = server.Metrics.BatchedRows;
                for (int r = 0; r < Math.Max(1, reps); r++)   // alternate the order, so both see the same machine load
                {
                    if (r % 2 == 0) { direct.Add(await directThread.Run(Direct)); served.Add(await Served()); }
                    else { served.Add(await Served()); direct.Add(await directThread.Run(Direct)); }
                }

                double Direct()
                {
                    var sw = Stopwatch.StartNew();
                    for (int i = 0; i < requests; i += clients)
                    {
                        var outs = TextGenerator.Generate(model, chosen.Skip(i).Take(clients).ToList(), options with { Seed = 1 + i });
                        if (outs.Any(o => o.Tokens.Length != NewTokens)) throw new InvalidOperationException("a row stopped early");
                    }
                    return sw.Elapsed.TotalSeconds;
                }

                async Task<double> Served()
                {
                    var sw = Stopwatch.StartNew();
                    var workers = Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
                    {
                        for (int i = c; i < requests; i += clients) await Post(http, chosen[i], NewTokens);
                    })).ToArray();
                    await Task.WhenAll(workers);
                    return sw.Elapsed.TotalSeconds;
                }
                double d = Median(direct), s = Median(served);
                long batches = server.Metrics.Batches - batchesBefore, rows = server.Metrics.BatchedRows - rowsBefore;
                Console.WriteLine(new JsonObject
                {
                    ["workload"] = "serve", ["clients"] = clients, ["requests"] = requests, ["new_tokens_per_request"] = NewTokens,
                    ["direct_s"] = Math.Round(d, 3), ["server_s"] = Math.Round(s, 3),
                    ["direct_requests_per_s"] = Math.Round(requests / d, 3), ["server_requests_per_s"] = Math.Round(requests / s, 3),
                    ["direct_new_tokens_per_s"] = Math.Round(requests * NewTokens / d, 1), ["server_new_tokens_per_s"] = Math.Round(requests * NewTokens / s, 1),
                    ["server_over_direct_throughput"] = Math.Round(d / s, 3),
                    ["server_mean_batch_rows"] = batches == 0 ? 0 : Math.Round((double)rows / batches, 2),
                    ["direct_s_all"] = new JsonArray(direct.Select(x => (JsonNode)Math.Round(x, 2)).ToArray()),
                    ["server_s_all"] = new JsonArray(served.Select(x => (JsonNode)Math.Round(x, 2)).ToArray()),
                    ["load_1min"] = Load(),
                }.ToJsonString());
            }
            return 0;
        }
        finally
        {
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    private static async Task Post(HttpClient http, int[] prompt, int maxTokens)
    {
        var body = new JsonObject
        {
            ["model"] = "bench", ["prompt"] = new JsonArray(prompt.Select(x => (JsonNode)x).ToArray()), ["max_tokens"] = maxTokens,
            ["temperature"] = 1.0, ["top_p"] = 0.9, ["ignore_eos"] = true,
        };
        using var r = await http.PostAsync("/v1/completions", new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"));
        string text = await r.Content.ReadAsStringAsync();
        if (!r.IsSuccessStatusCode) throw new InvalidOperationException($"HTTP {(int)r.StatusCode}: {text}");
        if (JsonNode.Parse(text)!["usage"]!["completion_tokens"]!.GetValue<int>() != maxTokens) throw new InvalidOperationException("short completion");
    }

    private static double Median(List<double> xs)
    {
        var s = xs.OrderBy(x => x).ToList();
        return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
    }

    private static double Load()
    {
        try { return double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture); }
        catch (IOException) { return -1; }
    }
}

/// <summary>Runs work items one at a time on a single long-lived thread.</summary>
internal sealed class DedicatedThread : IDisposable
{
    private readonly System.Collections.Concurrent.BlockingCollection<Action> _work = new();
    private readonly Thread _thread;

    public DedicatedThread()
    {
        _thread = new Thread(() => { foreach (var a in _work.GetConsumingEnumerable()) a(); }) { IsBackground = true, Name = "bench-direct" };
        _thread.Start();
    }

    public Task<T> Run<T>(Func<T> f)
    {
        var tcs = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        _work.Add(() => { try { tcs.SetResult(f()); } catch (Exception e) { tcs.SetException(e); } });
        return tcs.Task;
    }

    public void Dispose()
    {
        _work.CompleteAdding();
        _thread.Join();
        _work.Dispose();
    }
}
