using System.Runtime.InteropServices;

namespace FineAlign;

/// <summary>
/// Checks for a path where a regular file is expected (data, tokenizer and config files): a folder, a device such as
/// /dev/zero, a FIFO or a socket is refused with one line naming the path and the option, before anything reads from
/// it (reading a device or a FIFO never ends or blocks). Symbolic links are followed (the Hugging Face cache is links).
/// </summary>
public static class InputFile
{
    /// <summary>What kind of file system entry a path names (after following links).</summary>
    public enum Kind { Missing, Regular, Directory, CharacterDevice, BlockDevice, Fifo, Socket, Other, Unknown }

    /// <summary>
    /// Throws a <see cref="FineAlignException"/> unless <paramref name="path"/> is a regular file. <paramref name="what"/>
    /// names it for the user: the flag they typed ("--data") or the file's role ("tokenizer_config.json").
    /// </summary>
    public static void RequireRegular(string path, string? what = null)
    {
        string prefix = what is null ? path : $"{what} {path}";
        switch (KindOf(path))
        {
            case Kind.Regular or Kind.Unknown: return;
            case Kind.Missing: throw new FineAlignException($"{prefix}: file not found");
            case Kind.Directory: throw new FineAlignException($"{prefix}: is a folder, expected a file");
            case var k:
                throw new FineAlignException($"{prefix}: is a {Describe(k)}, not a regular file (reading it would not end or would block)");
        }
    }

    private static string Describe(Kind k) => k switch
    {
        Kind.CharacterDevice => "character device",
        Kind.BlockDevice => "block device",
        Kind.Fifo => "named pipe (FIFO)",
        Kind.Socket => "socket",
        _ => "special file",
    };

    /// <summary>The entry's kind; <see cref="Kind.Unknown"/> where the platform does not tell (non-Linux).</summary>
    public static Kind KindOf(string path)
    {
        if (Directory.Exists(path)) return Kind.Directory;
        if (!File.Exists(path)) return Kind.Missing;
        if (!OperatingSystem.IsLinux()) return Kind.Unknown;
        try
        {
            // statx has one layout on every Linux architecture (stat does not); stx_mode is the u16 at offset 28.
            var buffer = new byte[256];
            if (statx(AtFdCwd, path, 0, StatxType, buffer) != 0) return Kind.Unknown;
            int mode = BitConverter.ToUInt16(buffer, 28) & 0xF000;
            return mode switch
            {
                0x8000 => Kind.Regular,
                0x4000 => Kind.Directory,
                0x2000 => Kind.CharacterDevice,
                0x6000 => Kind.BlockDevice,
                0x1000 => Kind.Fifo,
                0xC000 => Kind.Socket,
                _ => Kind.Other,
            };
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return Kind.Unknown; }
    }

    /// <summary>
    /// Reads a whole small file (config, tokenizer) as UTF-8 text after checking it is regular and at most
    /// <paramref name="maxBytes"/> long, so a link to a device or a multi-GB file fails with its name instead of
    /// exhausting memory.
    /// </summary>
    public static string ReadAllText(string path, long maxBytes, string? what = null)
    {
        RequireRegular(path, what);
        long length = new FileInfo(path).Length;
        if (length > maxBytes)
            throw new FineAlignException($"{(what is null ? path : $"{what} {path}")}: {length:N0} bytes, more than the {maxBytes:N0} bytes such a file can sensibly be");
        return File.ReadAllText(path);
    }

    private const int AtFdCwd = -100;
    private const uint StatxType = 0x1;

    [DllImport("libc", SetLastError = true)]
    private static extern int statx(int dirfd, string pathname, int flags, uint mask, byte[] statxbuf);
}
