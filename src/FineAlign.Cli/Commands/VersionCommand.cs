using System.CommandLine;
using System.Runtime.InteropServices;

namespace FineAlign.Cli.Commands;

/// <summary><c>finealign version</c>: versions of FineAlign, TorchSharp and .NET (does not load libtorch).</summary>
public static class VersionCommand
{
    public static Command Create()
    {
        var cmd = new Command("version", "Show the versions of finealign, TorchSharp and .NET.");
        cmd.SetAction(parseResult =>
        {
            var o = parseResult.InvocationConfiguration.Output;
            o.WriteLine($"finealign {CliApp.Version}");
            o.WriteLine($"TorchSharp {typeof(TorchSharp.torch).Assembly.GetName().Version}");
            o.WriteLine($".NET {Environment.Version} ({RuntimeInformation.OSDescription}, {RuntimeInformation.ProcessArchitecture})");
            return 0;
        });
        return cmd;
    }
}
