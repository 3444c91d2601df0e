using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;

namespace FineAlign.Tests.Serving;

/// <summary>`finealign serve` as a real child process: SIGTERM while a request is in flight.</summary>
public partial class ServeProcessTests
{
    private static readonly string CliDll = Path.Combine(AppContext.BaseDirectory, "FineAlign.Cli.dll");

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int signal);

    private const int SIGTERM = 15;

    [GeneratedRegex(@"on (http://127\.0\.0\.1:\d+/)")]
    private static partial Regex Address();

    [Fact]
    public async Task Sigterm_lets_the_request_in_flight_finish_then_the_process_exits_0()
    {
        Assert.True(File.Exists(CliDll), $"{CliDll} not found: the test project must reference the CLI project");
        using var tmp = TestPaths.NewTempDir();
        string model = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "m"), seed: 3, context: 256);
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { CliDll, "serve", "--model", model, "--port", "0", "--threads", "1" }) psi.ArgumentList.Add(a);
        psi.Environment["NO_COLOR"] = "1";
        using var p = new Process { StartInfo = psi };
        var output = new StringBuilder();
        var ready = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        p.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (output) output.AppendLine(e.Data);
            if (Address().Match(e.Data) is { Success: true } m) ready.TrySetResult(m.Groups[1].Value);
        };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        try
        {
            string url = await ready.Task.WaitAsync(TimeSpan.FromSeconds(60));
            using var http = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromSeconds(60) };
            var request = http.PostAsync("/v1/completions", new StringContent(
                """{"prompt": [256, 70], "max_tokens": 250, "ignore_eos": true, "logprobs": 0}""", Encoding.UTF8, "application/json"));
            var deadline = DateTime.UtcNow.AddSeconds(20);
            while (!(await http.GetStringAsync("/metrics")).Contains("finealign_requests_in_flight 1") && DateTime.UtcNow < deadline) await Task.Delay(5);
            Assert.False(request.IsCompleted);
            Assert.Equal(0, kill(p.Id, SIGTERM));

            using var response = await request;
            Assert.Equal(200, (int)response.StatusCode);
            var body = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
            Assert.Equal(250, body["usage"]!["completion_tokens"]!.GetValue<int>());
            Assert.True(p.WaitForExit(30_000), "serve did not exit after SIGTERM:\n" + output);
            p.WaitForExit();
            Assert.True(p.ExitCode == 0, $"exit code {p.ExitCode}:\n{output}");
            Assert.Contains("stopping: finishing 1 in-flight request(s)", output.ToString());
        }
        finally
        {
            if (!p.HasExited) p.Kill(true);
        }
    }
}
