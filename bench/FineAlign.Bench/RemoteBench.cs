using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using FineAlign;
using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Rewards;
using FineAlign.Text;
using FineAlign.Trainers;
using TorchSharp;

/// <summary>
/// <c>--workload remote</c> (issue #17, docs/SCALING.md): the remote rollout engine against 1, 2 and 4 local
/// <c>finealign serve</c> <b>processes</b> on loopback, and the PPO iteration it gives.
/// <list type="number">
/// <item>Generation: one rollout request of P prompts × n samples (random small Llama, byte vocabulary, T = 1) through
/// <see cref="LocalRolloutEngine"/> in this process and through <see cref="RemoteRolloutEngine"/> on the first 1, 2
/// and 4 servers; new tokens per second (tokens actually sampled: a random model sometimes hits EOS), median of the
/// reps, the configurations interleaved within each rep so they see the same machine load.</item>
/// <item>PPO: <see cref="OnlineRlTrainer"/> (GAE, value model) for a few steps with local generation, then on 1 and 2
/// servers with <c>--rollout-sync full</c> (write + reload after every update, counted in the iteration); mean step
/// time after the first (warm-up) step, split by phase.</item>
/// </list>
/// Ratios are against the local engine measured in the same run. Each server runs with <c>--threads</c> = the bench's
/// --serve-threads (default 1), so 4 servers on 2 cores oversubscribe on purpose: the point is what the engine's
/// overlap gives on this machine, not absolute speed.
/// </summary>
internal static partial class RemoteBench
{
    public static async Task<int> RunAsync(Dictionary<string, string> args, int reps, int threads)
    {
        int prompts = int.Parse(args.GetValueOrDefault("prompts", "8")), n = int.Parse(args.GetValueOrDefault("n", "4"));
        int newTokens = int.Parse(args.GetValueOrDefault("new-tokens", "48")), serveThreads = int.Parse(args.GetValueOrDefault("serve-threads", "1"));
        int ppoSteps = int.Parse(args.GetValueOrDefault("ppo-steps", "4"));
        // Requests in flight per endpoint (--rollout-concurrency): by default every prompt of the request at once, so a server
        // can batch them as the local engine batches the whole request.
        int? concurrency = args.TryGetValue("concurrency", out var c) ? int.Parse(c) : null;
        string cli = args.GetValueOrDefault("finealign", Path.Combine(AppContext.BaseDirectory, "FineAlign.Cli.dll"));
        if (!File.Exists(cli)) { Console.Error.WriteLine($"{cli} not found: build the bench (it references the CLI) or pass --finealign PATH/FineAlign.Cli.dll"); return 1; }
        torch.set_num_threads(threads);

        var config = new ModelConfig
        {
            ModelType = "llama", VocabSize = 261, HiddenSize = 256, IntermediateSize = 688, NumLayers = 4, NumHeads = 4, NumKvHeads = 4,
            HeadDim = 64, MaxPositionEmbeddings = 256, BosTokenId = 256, EosTokenIds = [257], PadTokenId = 258, RopeTheta = 10000, NormEps = 1e-5,
        };
        string root = Path.Combine(Path.GetTempPath(), "finealign-remote-bench-" + Guid.NewGuid().ToString("N")[..8]);
        string modelDir = Path.Combine(root, "model");
        var servers = new List<(Process Process, Uri Url)>();
        try
        {
            var tokenizer = new ByteTokenizer();
            using (var m = ModelFactory.Create(config, seed: 0)) ModelIO.Save(m, modelDir, tokenizer);
            long parameters;
            using (var m = ModelIO.Load(modelDir)) parameters = m.parameters().Sum(p => p.numel());
            var starts = Enumerable.Range(0, 4).Select(_ => StartServe(cli, modelDir, serveThreads)).ToList();
            foreach (var s in starts) servers.Add(await s);
            Console.WriteLine(new JsonObject
            {
                ["workload"] = "remote-setup", ["params"] = parameters, ["servers"] = servers.Count, ["serve_threads"] = serveThreads, ["bench_threads"] = threads,
                ["prompts"] = prompts, ["n"] = n, ["rollout_concurrency"] = concurrency?.ToString() ?? "all prompts", ["max_new_tokens"] = newTokens, ["cores"] = Environment.ProcessorCount, ["load_1min"] = Load(),
            }.ToJsonString());

            // 1. Generation throughput.
            var rng = new Random(1);
            var promptIds = Enumerable.Range(0, prompts).Select(_ => new[] { 256 }.Concat(Enumerable.Range(0, 16).Select(_ => rng.Next(97, 123))).ToArray()).ToList();
            RolloutRequest Request(int rep) => new()
            {
                PromptIds = promptIds, SamplesPerPrompt = n, MaxNewTokens = newTokens, Temperature = 1.0, Seed = 1000 + rep, StopTokenIds = config.EosTokenIds,
            };
            using var local = ModelIO.Load(modelDir);
            var engines = new List<(string Name, IRolloutEngine Engine)> { ("local", new LocalRolloutEngine(local, tokenizer)) };
            foreach (bool seeded in new[] { true, false })   // finealign serve decodes a seeded request alone; unseeded ones share batches
                foreach (int k in new[] { 1, 2, 4 })
                    engines.Add(($"serve x{k}{(seeded ? "" : " unseeded")}", new RemoteRolloutEngine(new RemoteRolloutOptions
                    {
                        Endpoints = servers.Take(k).Select(s => s.Url).ToList(), Model = "bench", MaxConcurrency = concurrency ?? prompts, Timeout = TimeSpan.FromMinutes(10),
                        Seeded = seeded,
                    })));
            foreach (var (_, e) in engines) e.Generate(Request(-1) with { MaxNewTokens = 4 });   // warm-up: every server, the local engine
            var seconds = engines.ToDictionary(e => e.Name, _ => new List<double>());
            var tokens = engines.ToDictionary(e => e.Name, _ => new List<long>());
            for (int rep = 0; rep < Math.Max(1, reps); rep++)
            {
                var order = rep % 2 == 0 ? engines : Enumerable.Reverse(engines).ToList();
                foreach (var (name, engine) in order)
                {
                    var sw = Stopwatch.StartNew();
                    var samples = engine.Generate(Request(rep));
                    seconds[name].Add(sw.Elapsed.TotalSeconds);
                    tokens[name].Add(samples.Sum(s => (long)s.ResponseIds.Length));
                }
            }
            double localRate = Rate("local");
            double Rate(string name) => seconds[name].Zip(tokens[name], (s, t) => t / s).OrderBy(x => x).ElementAt(seconds[name].Count / 2);
            foreach (var (name, _) in engines)
                Console.WriteLine(new JsonObject
                {
                    ["workload"] = "remote-generate", ["engine"] = name, ["median_new_tokens_per_s"] = Math.Round(Rate(name), 1),
                    ["over_local"] = Math.Round(Rate(name) / localRate, 3),
                    ["seconds_all"] = new JsonArray(seconds[name].Select(x => (JsonNode)Math.Round(x, 2)).ToArray()),
                    ["tokens_all"] = new JsonArray(tokens[name].Select(x => (JsonNode)x).ToArray()), ["load_1min"] = Load(),
                }.ToJsonString());
            foreach (var (_, e) in engines) (e as IDisposable)?.Dispose();

            // 2. PPO iteration time: local generation vs 1 and 2 servers (full weight sync after every update).
            double localStep = 0;
            foreach (var (k, seeded) in new[] { (0, true), (1, true), (2, true), (1, false), (2, false) })
            {
                using var remote = k == 0 ? null : new RemoteRolloutEngine(new RemoteRolloutOptions
                {
                    Endpoints = servers.Take(k).Select(s => s.Url).ToList(), Model = "bench", MaxConcurrency = concurrency ?? prompts * n, Timeout = TimeSpan.FromMinutes(10),
                    SyncDir = Path.Combine(root, $"sync-{k}-{seeded}"), Seeded = seeded,
                });
                var (mean, phases) = Ppo(modelDir, Path.Combine(root, $"ppo-{k}-{seeded}"), remote, prompts * n, newTokens, ppoSteps);
                if (k == 0) localStep = mean;
                var row = new JsonObject
                {
                    ["workload"] = "remote-ppo", ["rollouts"] = k == 0 ? "local" : $"serve x{k}{(seeded ? "" : " unseeded")}", ["batch"] = prompts * n, ["steps_timed"] = ppoSteps - 1,
                    ["mean_step_s"] = Math.Round(mean, 3), ["over_local"] = Math.Round(mean / localStep, 3), ["load_1min"] = Load(),
                };
                foreach (var kv in phases) row[$"{kv.Key}_s"] = Math.Round(kv.Value, 3);
                Console.WriteLine(row.ToJsonString());
            }
            return 0;
        }
        finally
        {
            foreach (var (p, _) in servers) { try { if (!p.HasExited) p.Kill(true); p.WaitForExit(10_000); } catch (InvalidOperationException) { } p.Dispose(); }
            try { Directory.Delete(root, true); } catch (IOException) { }
        }
    }

    /// <summary>Mean wall time of steps 2..N (step 1 warms up) and the mean seconds per phase.</summary>
    private static (double Mean, Dictionary<string, double> Phases) Ppo(string modelDir, string outDir, RemoteRolloutEngine? remote, int batch, int newTokens, int steps)
    {
        using var policy = ModelIO.Load(modelDir);
        using var reference = ModelIO.Load(modelDir);
        using var value = ValueModel.Separate(new ScoredLM(ModelIO.Load(modelDir), HeadKind.Token, 1, 5));
        var reward = ProgrammaticRewardSource.Sequence("len", e => e.ResponseIds.Length % 5);
        var promptTexts = Enumerable.Range(0, batch).Select(i => $"once upon a time {i}").ToList();
        using var trainer = new OnlineRlTrainer(policy, reference, value, new ByteTokenizer(), reward, promptTexts,
            OnlineRlOptions.Ppo with { OutputDir = outDir, Steps = steps, BatchSize = batch, MiniBatchSize = batch / 2, Epochs = 1, MaxNewTokens = newTokens, LearningRate = 1e-4 })
        {
            Rollouts = remote ?? (IRolloutEngine)new LocalRolloutEngine(policy, new ByteTokenizer()), SyncRolloutWeights = remote is not null, WriteTensorBoard = false,
        };
        var times = new List<double>();
        var phases = new Dictionary<string, double>();
        for (int step = 1; step <= steps; step++)
        {
            var sw = Stopwatch.StartNew();
            trainer.Step(step);
            if (step == 1) continue;
            times.Add(sw.Elapsed.TotalSeconds);
            foreach (var kv in trainer.LastStepSeconds) phases[kv.Key] = phases.GetValueOrDefault(kv.Key) + kv.Value / (steps - 1);
        }
        return (times.Average(), phases);
    }

    [GeneratedRegex(@"on (http://127\.0\.0\.1:\d+/)")]
    private static partial Regex Address();

    /// <summary>Starts <c>finealign serve</c> as a child process on a free loopback port and waits for its address line.</summary>
    private static async Task<(Process, Uri)> StartServe(string cli, string modelDir, int threads)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { cli, "serve", "--model", modelDir, "--served-model-name", "bench", "--port", "0", "--threads", threads.ToString(), "--max-batch", "64" })
            psi.ArgumentList.Add(a);
        psi.Environment["NO_COLOR"] = "1";
        var p = new Process { StartInfo = psi };
        var ready = new TaskCompletionSource<Uri>(TaskCreationOptions.RunContinuationsAsynchronously);
        var log = new StringBuilder();
        p.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (log) log.AppendLine(e.Data);
            if (Address().Match(e.Data) is { Success: true } m) ready.TrySetResult(new Uri(m.Groups[1].Value));
        };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.AppendLine(e.Data); };
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        try { return (p, await ready.Task.WaitAsync(TimeSpan.FromMinutes(2))); }
        catch (TimeoutException) { p.Kill(true); throw new InvalidOperationException("finealign serve did not start:\n" + log); }
    }

    private static double Load()
    {
        try { return double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture); }
        catch (IOException) { return -1; }
    }
}
